//! Shared set-up of the service's integration tests: the test kit's API server
//! with the CRDs, the simulated cloud, and the controller running in-process.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use meshmirror::app::{self, RunOptions};
use meshmirror::cluster::Cluster;
use meshmirror::crd::{ScalingGroupMirror, ScalingGroupMirrorStatus};
use meshmirror::kube_cluster::KubeCluster;
use meshmirror::metrics::Metrics;
use meshmirror::policy::AllowedGroups;
use meshmirror::ratelimit::RateLimiter;
use meshmirror::reconcile::Reconciler;
use meshmirror::workloadentry::EntryVersion;
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::apiserver::ApiServer;

/// How long a test waits for the controller to converge before it fails.
pub const CONVERGE: Duration = Duration::from_secs(20);

pub struct Harness {
    pub server: ApiServer,
    pub client: Client,
    pub sim: SimCloud,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<bool, app::AppError>>>,
}

pub async fn server() -> ApiServer {
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
            server,
            sim,
            stop: None,
            task: None,
        };
        h.start_controller();
        h
    }

    /// Server and sim only; passes are driven by the test.
    pub async fn without_controller(sim: SimCloud) -> Harness {
        let server = server().await;
        Harness {
            client: server.client(),
            server,
            sim,
            stop: None,
            task: None,
        }
    }

    pub fn start_controller(&mut self) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let opts = RunOptions {
            sim_cloud: Some(self.sim.clone()),
            kube_qps: 0.0,
            ..RunOptions::default()
        };
        self.task = Some(tokio::spawn(app::run(self.client.clone(), opts, async {
            let _ = rx.await;
        })));
        self.stop = Some(tx);
    }

    pub async fn stop_controller(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// A reconciler on this server and sim, for tests that drive passes.
    pub fn reconciler(&self) -> Reconciler {
        let metrics = Arc::new(Metrics::new());
        let cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(
            self.client.clone(),
            EntryVersion::V1,
            None,
            RateLimiter::unlimited(),
            None,
        ));
        Reconciler::new(
            app::providers(&metrics, Some(self.sim.clone())),
            cluster,
            metrics,
            AllowedGroups::default(),
        )
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
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
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
