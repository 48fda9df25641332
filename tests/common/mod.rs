//! Shared set-up of the service's integration tests: the test kit's API server
//! with the CRDs, the simulated cloud, and the controller running in-process.

#![allow(dead_code)]

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use meshmirror::app::{self, RunOptions};
use meshmirror::cluster::Cluster;
use meshmirror::cluster::kube::KubeCluster;
use meshmirror::cluster::ratelimit::RateLimiter;
use meshmirror::controller::pass::Reconciler;
use meshmirror::core::policy::AllowedGroups;
use meshmirror::crd::{ScalingGroupMirror, ScalingGroupMirrorStatus};
use meshmirror::metrics::Metrics;
use meshmirror::workloadentry::EntryVersion;
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::{ApiServer, TestKube};

/// How long a test waits for the controller to converge before it fails.
pub const CONVERGE: Duration = Duration::from_secs(20);

pub struct Harness {
    pub server: TestKube,
    /// The test's own client (admin).
    pub client: Client,
    /// The client the service under test runs with: on the real backend,
    /// the shipped ServiceAccount and RBAC.
    pub service: Client,
    pub sim: SimCloud,
    controller: Option<ControllerTask>,
    /// How the controllers this harness started ended, when they ended
    /// without being stopped or with an error.
    failures: Failures,
}

/// What went wrong with the controllers of a test, one line each.
pub type Failures = Arc<Mutex<Vec<String>>>;

/// Panics with every failure recorded, if any.
pub fn check_failures(failures: &Failures) {
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner());
    if !failures.is_empty() {
        panic!("{}", failures.join("\n"));
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A controller (`app::run`) running as a task of the test. It must run
/// until the test stops it: if it ends by itself (an error, a panic, or even
/// Ok), or ends with an error once stopped, that is recorded in its
/// [`Failures`], and the harness's waits fail at once with it.
pub struct ControllerTask {
    name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<bool, String>>>,
    stopping: Arc<AtomicBool>,
    failures: Failures,
}

impl ControllerTask {
    pub fn spawn(name: &str, client: Client, opts: RunOptions, failures: &Failures) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = Arc::new(AtomicBool::new(false));
        let task = {
            let (name, stopping, failures) = (name.to_string(), stopping.clone(), failures.clone());
            tokio::spawn(async move {
                let run = app::run(client, opts, async {
                    let _ = rx.await;
                });
                let outcome = match AssertUnwindSafe(run).catch_unwind().await {
                    Ok(Ok(ok)) => Ok(ok),
                    Ok(Err(error)) => Err(format!("controller {name} failed: {error}")),
                    Err(panic) => Err(format!(
                        "controller {name} panicked: {}",
                        panic_message(panic.as_ref())
                    )),
                };
                let failure = match &outcome {
                    Err(why) => Some(why.clone()),
                    Ok(ok) if !stopping.load(Ordering::SeqCst) => Some(format!(
                        "controller {name} ended (Ok({ok})) before the test stopped it"
                    )),
                    Ok(_) => None,
                };
                if let Some(why) = failure {
                    failures.lock().unwrap_or_else(|e| e.into_inner()).push(why);
                }
                outcome
            })
        };
        ControllerTask {
            name: name.to_string(),
            stop: Some(tx),
            task: Some(task),
            stopping,
            failures: failures.clone(),
        }
    }

    /// Panics if this controller (or another sharing its failures) has
    /// ended by itself or with an error.
    pub fn check(&self) {
        check_failures(&self.failures);
    }

    /// Asks the controller to stop, and panics unless it ends Ok within 10 s.
    pub async fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let name = self.name.clone();
        let Some(task) = self.task.take() else { return };
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Err(_) => panic!("controller {name} did not stop within 10 s"),
            Ok(Err(join)) => panic!("controller {name}: {join}"),
            Ok(Ok(Err(why))) => panic!("{why}"),
            Ok(Ok(Ok(_))) => {}
        }
    }
}

impl Drop for ControllerTask {
    /// Stops the controller without waiting for it (an error it ends with
    /// is still recorded).
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The test's API server on the run's backend (`MESHMIRROR_KUBE`).
pub async fn server() -> TestKube {
    TestKube::start(fake_server).await
}

/// The test kit's server with meshmirror's CRD, whatever the backend: for
/// what only it can do.
pub async fn fake_server() -> ApiServer {
    ApiServer::builder()
        .crd_yaml(&app::crd_yaml())
        .start()
        .await
        .expect("test kit API server starts")
}

/// A sim group `web` with `n` running instances i-01.. at 10.0.1.N.
pub fn sim_with(n: u8) -> SimCloud {
    let sim = SimCloud::new();
    sim.ensure_group("web", "us-east-1");
    for i in 1..=n {
        sim.add_instance(
            "web",
            SimInstance::running(format!("i-{i:02}"), std::net::Ipv4Addr::new(10, 0, 1, i))
                .with_zone("us-east-1a"),
        )
        .unwrap();
    }
    sim
}

impl Harness {
    /// Server, sim and a running controller.
    pub async fn start(sim: SimCloud) -> Harness {
        let server = server().await;
        let mut h = Harness {
            client: server.client(),
            service: server.service_client(None).await,
            server,
            sim,
            controller: None,
            failures: Failures::default(),
        };
        h.start_controller();
        h
    }

    /// Server and sim only; passes are driven by the test.
    pub async fn without_controller(sim: SimCloud) -> Harness {
        let server = server().await;
        Harness {
            client: server.client(),
            service: server.service_client(None).await,
            server,
            sim,
            controller: None,
            failures: Failures::default(),
        }
    }

    pub fn start_controller(&mut self) {
        let opts = RunOptions {
            sim_cloud: Some(self.sim.clone()),
            kube_qps: 0.0,
            allow_all_groups: true,
            ..RunOptions::default()
        };
        self.controller = Some(self.spawn_controller("main", self.service.clone(), opts));
    }

    /// Stops the controller `start` or `start_controller` started, and
    /// panics unless it ended Ok.
    pub async fn stop_controller(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.stop().await;
        }
    }

    /// Another controller on this harness (a replica, other options): the
    /// harness's waits fail at once if it ends by itself or with an error.
    pub fn spawn_controller(&self, name: &str, client: Client, opts: RunOptions) -> ControllerTask {
        ControllerTask::spawn(name, client, opts, &self.failures)
    }

    /// Panics if a controller this harness started has ended by itself or
    /// with an error; for a test's own wait loops.
    pub fn check_controllers(&self) {
        check_failures(&self.failures);
    }

    /// A reconciler on this server and sim, for tests that drive passes.
    pub fn reconciler(&self) -> Reconciler {
        let metrics = Arc::new(Metrics::new());
        let cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(
            self.service.clone(),
            EntryVersion::V1,
            None,
            RateLimiter::unlimited(),
            None,
        ));
        Reconciler::new(
            app::providers(&metrics, Some(self.sim.clone())),
            cluster,
            metrics,
            AllowedGroups::allow_all(),
        )
    }

    /// Creates a namespace (an existing one is fine).
    pub async fn create_namespace(&self, name: &str) {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .expect("a namespace");
        let _ = api.create(&PostParams::default(), &ns).await;
    }

    pub fn mirrors(&self, ns: &str) -> Api<ScalingGroupMirror> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub fn entries_api(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            ns,
            &EntryVersion::V1.workload_entries(),
        )
    }

    pub async fn create_mirror(&self, yaml: &str) -> ScalingGroupMirror {
        let mirror: ScalingGroupMirror = serde_yaml::from_str(yaml).expect("test mirror parses");
        let ns = mirror
            .metadata
            .namespace
            .clone()
            .unwrap_or("default".into());
        self.mirrors(&ns)
            .create(&PostParams::default(), &mirror)
            .await
            .expect("mirror created")
    }

    pub async fn entries(&self, ns: &str) -> Vec<DynamicObject> {
        let mut items = self
            .entries_api(ns)
            .list(&ListParams::default())
            .await
            .expect("list entries")
            .items;
        items.sort_by_key(|o| o.metadata.name.clone());
        items
    }

    /// Waits until `done` holds for the namespace's entries.
    pub async fn wait_entries(
        &self,
        ns: &str,
        what: &str,
        done: impl Fn(&[DynamicObject]) -> bool,
    ) -> Vec<DynamicObject> {
        let started = Instant::now();
        loop {
            self.check_controllers();
            let items = self.entries(ns).await;
            if done(&items) {
                return items;
            }
            if started.elapsed() > CONVERGE {
                panic!(
                    "timed out waiting for entries: {what}; have {} entries: {:?}",
                    items.len(),
                    items
                        .iter()
                        .map(|o| o.metadata.name.clone())
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn status(&self, ns: &str, name: &str) -> ScalingGroupMirrorStatus {
        self.mirrors(ns)
            .get(name)
            .await
            .expect("get mirror")
            .status
            .unwrap_or_default()
    }

    /// Waits until the mirror's status satisfies `done`.
    pub async fn wait_status(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        done: impl Fn(&ScalingGroupMirrorStatus) -> bool,
    ) -> ScalingGroupMirrorStatus {
        let started = Instant::now();
        loop {
            self.check_controllers();
            let status = self.status(ns, name).await;
            if done(&status) {
                return status;
            }
            if started.elapsed() > CONVERGE {
                panic!("timed out waiting for status: {what}; have {status:#?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Harness {
    /// Stops the controller without waiting; fails the test with what its
    /// controllers recorded, unless it is failing already.
    fn drop(&mut self) {
        self.controller.take();
        if !std::thread::panicking() {
            self.check_controllers();
        }
    }
}

pub fn condition<'a>(
    status: &'a ScalingGroupMirrorStatus,
    type_: &str,
) -> Option<&'a meshmirror::crd::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_ready(status: &ScalingGroupMirrorStatus) -> bool {
    condition(status, "Ready").is_some_and(|c| c.status == "True")
}

pub fn label(obj: &DynamicObject, key: &str) -> String {
    obj.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .cloned()
        .unwrap_or_default()
}

pub fn annotation(obj: &DynamicObject, key: &str) -> String {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|l| l.get(key))
        .cloned()
        .unwrap_or_default()
}

/// A mirror of sim group `web` in `ns` with the given extra spec lines.
pub fn mirror_yaml(ns: &str, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  provider:\n    sim:\n      group: web\n{extra}"
    )
}

pub const TWO_WORKLOADS: &str = "  workloads:
    - name: api
      labels: {app: api}
      ports: {http: 8080}
      serviceAccount: api-sa
    - name: exporter
      labels: {app: exporter}
      ports: {metrics: 9100}
      serviceAccount: exporter-sa
";

/// Options that allow every group (`--allow-all-groups`): for tests whose
/// subject is not the allow-list, which denies everything by default.
pub fn all_groups() -> RunOptions {
    RunOptions {
        allow_all_groups: true,
        ..RunOptions::default()
    }
}

/// Waits until the sim has answered `members()` at least `n` times, in all or
/// for one group: each pass asks once, so this counts passes that have started.
pub async fn wait_members_calls(h: &Harness, group: Option<&str>, n: u64, what: &str) {
    let calls = || match group {
        Some(group) => h.sim.members_calls_for(group).unwrap_or_default(),
        None => h.sim.members_calls(),
    };
    let started = Instant::now();
    while calls() < n {
        h.check_controllers();
        assert!(
            started.elapsed() < CONVERGE,
            "timed out waiting for {what}: {} of {n} members() calls",
            calls()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The group sizes a benchmark runs: `MESHMIRROR_BENCH_SIZES`
/// (comma-separated, e.g. `10,100`), else `default`.
pub fn bench_sizes<T: std::str::FromStr + Copy>(default: &[T]) -> Vec<T> {
    match std::env::var("MESHMIRROR_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("MESHMIRROR_BENCH_SIZES: {n:?} is not a size"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}
