//! `meshmirror demo`: the whole loop with no cloud and no cluster. Starts the
//! test kit's API server and the simulated cloud in-process, runs the
//! controller against them, and walks a mirror through scale-out, scale-in
//! (through the pre-termination hook) and a label change, printing the entries
//! after each step with how long the change took to reach the API server,
//! and the Service, ServiceEntry and Sidecar the mirror owns beside them.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use meshmirror_provider::Outcome;
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::apiserver::ApiServer;

use crate::app::{self, AppError, RunOptions};
use crate::core::mesh::MeshKind;
use crate::crd::ScalingGroupMirror;
use crate::workloadentry::{EntryVersion, keys};

const NAMESPACE: &str = "demo";
const GROUP: &str = "web";
/// How long a step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

const MIRROR: &str = r#"
apiVersion: meshmirror.io/v1alpha1
kind: ScalingGroupMirror
metadata:
  name: web
  namespace: demo
spec:
  provider:
    sim:
      group: web
  workloads:
    - name: api
      labels: {app: web-api, version: v1}
      ports: {http: 8080}
      serviceAccount: web-api
      service: {kind: ServiceEntry, ports: {http: {number: 80}}}
    - name: exporter
      labels: {app: node-exporter}
      ports: {http-metrics: 9100}
      serviceAccount: node-exporter
      service: {kind: Service}
  sidecar:
    workloadSelector: {app: web-vm}
  network: vm-network
  sync:
    interval: 30s
  lifecycle:
    drainSeconds: 2
    terminateHook: sim-termination
"#;

/// Output for a person, not logs.
fn say(out: &mut impl Write, line: impl AsRef<str>) {
    let _ = writeln!(out, "{}", line.as_ref());
}

/// Runs the demo; with `follow`, keeps serving afterwards until Ctrl-C.
pub async fn run(follow: bool) -> Result<(), AppError> {
    let mut out = std::io::stdout();
    let server = ApiServer::builder()
        .crd_yaml(&app::crd_yaml())
        .start()
        .await
        .map_err(|e| AppError::Invalid(format!("starting the in-process API server: {e}")))?;
    say(
        &mut out,
        format!("API server (test kit) on {}", server.url()),
    );
    let hold = async {
        if follow {
            let path = std::env::temp_dir()
                .join(format!("meshmirror-demo-{}.kubeconfig", std::process::id()));
            server
                .write_kubeconfig(&path)
                .map_err(|error| AppError::Read {
                    path: PathBuf::from(&path),
                    error,
                })?;
            say(
                &mut std::io::stdout(),
                format!(
                    "\nstill running; try:\n  kubectl --kubeconfig {} get sgm,workloadentries -n demo\nCtrl-C stops.",
                    path.display()
                ),
            );
            let _ = tokio::signal::ctrl_c().await;
        }
        Ok(())
    };
    scenario(server.client(), &mut out, hold).await
}

/// The walk-through on any API server that serves meshmirror's and Istio's
/// CRDs (the test kit's in-process one, or a real one in the tests): the
/// controller runs in-process against the simulated cloud; `hold` runs once
/// the steps are done, before the controller stops.
pub async fn scenario(
    client: kube::Client,
    out: &mut impl Write,
    hold: impl Future<Output = Result<(), AppError>>,
) -> Result<(), AppError> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let demo = serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))
        .map_err(|e| AppError::Invalid(format!("demo namespace: {e}")))?;
    match namespaces.create(&PostParams::default(), &demo).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let sim = SimCloud::new();
    sim.ensure_group(GROUP, "us-east-1");
    sim.set_termination_hook(GROUP, true)?;
    for i in 1..=3u8 {
        sim.add_instance(
            GROUP,
            SimInstance::running(format!("i-0{i}"), std::net::Ipv4Addr::new(10, 0, 1, i))
                .with_zone(format!(
                    "us-east-1{}",
                    ['a', 'b', 'c'][usize::from(i - 1) % 3]
                )),
        )?;
    }
    say(
        out,
        "simulated cloud: group web, 3 instances, pre-termination hook on",
    );
    east_west_gateway(&client).await?;
    say(
        out,
        "istio-system: an east-west gateway Service for network vm-network",
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(app::run(
        client.clone(),
        RunOptions {
            sim_cloud: Some(sim.clone()),
            // Deny by default: the demo's namespace may mirror its group.
            allowed_groups: vec![format!("{NAMESPACE}=sim:{GROUP}")],
            ..RunOptions::default()
        },
        async {
            let _ = stop_rx.await;
        },
    ));

    let mirrors: Api<ScalingGroupMirror> = Api::namespaced(client.clone(), NAMESPACE);
    let entries: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &EntryVersion::V1.workload_entries(),
    );
    let mirror: ScalingGroupMirror =
        serde_yaml::from_str(MIRROR).map_err(|e| AppError::Invalid(format!("demo mirror: {e}")))?;

    mirrors.create(&PostParams::default(), &mirror).await?;
    let took = wait_for(&entries, |e| e.len() == 6).await?;
    show(
        out,
        "1. mirror created: 3 VMs x 2 workloads",
        took,
        &entries,
    )
    .await?;
    show_mesh(out, &client, &mirrors).await?;

    sim.scale_out(GROUP, 2)?;
    let took = wait_for(&entries, |e| e.len() == 10).await?;
    show(out, "2. scale out by 2 VMs", took, &entries).await?;

    let started = Instant::now();
    let leaving = sim.scale_in(GROUP, 2)?;
    let took = wait_for(&entries, |e| e.len() == 6).await?;
    show(
        out,
        &format!(
            "3. scale in by 2 ({}): entries leave first",
            leaving.join(", ")
        ),
        took,
        &entries,
    )
    .await?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    while sim.completed_actions().len() < leaving.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered = answered_hooks(&sim, &leaving)?;
    say(
        out,
        format!(
            "   pre-termination hooks answered CONTINUE after the 2s drain: {answered} of {} ({} ms after scale-in)",
            leaving.len(),
            started.elapsed().as_millis()
        ),
    );

    let patch = serde_json::json!({"spec": {"workloads": [
        {"name": "api", "labels": {"app": "web-api", "version": "v2"}, "ports": {"http": 8080}, "serviceAccount": "web-api",
         "service": {"kind": "ServiceEntry", "ports": {"http": {"number": 80}}}},
        {"name": "exporter", "labels": {"app": "node-exporter"}, "ports": {"http-metrics": 9100}, "serviceAccount": "node-exporter",
         "service": {"kind": "Service"}}
    ]}});
    mirrors
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let took = wait_for(&entries, |e| {
        e.iter()
            .filter(|o| label(o, keys::WORKLOAD) == "api")
            .all(|o| label(o, "version") == "v2")
    })
    .await?;
    show(
        out,
        "4. label version=v2 on workload api (updated in place)",
        took,
        &entries,
    )
    .await?;

    hold.await?;
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(5), controller).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Err(e)) => return Err(AppError::Invalid(format!("the controller crashed: {e}"))),
        Err(_) => {
            return Err(AppError::Invalid(
                "the controller did not stop within 5 s".into(),
            ));
        }
    }
    say(out, "demo done");
    Ok(())
}

/// The gateway that makes network vm-network reachable from the mesh.
async fn east_west_gateway(client: &kube::Client) -> Result<(), AppError> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let services: Api<Service> = Api::namespaced(client.clone(), "istio-system");
    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, AppError> {
        serde_json::from_value(v).map_err(|e| AppError::Invalid(format!("demo gateway: {e}")))
    }
    let ns: k8s_openapi::api::core::v1::Namespace =
        parse(serde_json::json!({"metadata": {"name": "istio-system"}}))?;
    let gateway: Service = parse(serde_json::json!({
        "metadata": {"name": "istio-eastwestgateway",
                     "labels": {"topology.istio.io/network": "vm-network"}},
        "spec": {"selector": {"istio": "eastwestgateway"},
                 "ports": [{"name": "tls", "port": 15443}]},
    }))?;
    for created in [
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .map(|_| ()),
        services
            .create(&PostParams::default(), &gateway)
            .await
            .map(|_| ()),
    ] {
        match created {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The Services, ServiceEntry and Sidecar the mirror owns, and the
/// conditions about them, once its status reports them.
async fn show_mesh(
    out: &mut impl Write,
    client: &kube::Client,
    mirrors: &Api<ScalingGroupMirror>,
) -> Result<(), AppError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let conditions = loop {
        let status = mirrors.get("web").await?.status.unwrap_or_default();
        let wanted = ["MeshObjects", "NetworksReachable"];
        let found: Vec<_> = status
            .conditions
            .into_iter()
            .filter(|c| wanted.contains(&c.type_.as_str()))
            .collect();
        if found.len() == wanted.len() {
            break found;
        }
        if Instant::now() > deadline {
            return Err(AppError::Invalid(format!(
                "the mirror's status never reported its mesh objects: {:?}",
                mirrors.get("web").await?.status
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    say(out, "   and beside them, owned by the mirror:");
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=meshmirror");
    for kind in MeshKind::ALL {
        let resource = crate::cluster::mesh::resource(kind);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
        for o in api.list(&managed).await?.items {
            say(
                out,
                format!(
                    "  {:<13} {:<9} {}",
                    kind.kind(),
                    o.metadata.name.clone().unwrap_or_default(),
                    mesh_summary(kind, &o.data["spec"])
                ),
            );
        }
    }
    for c in conditions {
        say(
            out,
            format!(
                "  condition {}={} ({}): {}",
                c.type_, c.status, c.reason, c.message
            ),
        );
    }
    Ok(())
}

/// One line about a mesh object's spec.
fn mesh_summary(kind: MeshKind, spec: &serde_json::Value) -> String {
    let labels = |v: &serde_json::Value| {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let ports = |list: &serde_json::Value, number: &str| {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}->{}", p[number], p["targetPort"]))
            .collect::<Vec<_>>()
            .join(",")
    };
    match kind {
        MeshKind::Service => format!(
            "selects {} ports {}",
            labels(&spec["selector"]),
            ports(&spec["ports"], "port")
        ),
        MeshKind::ServiceEntry => format!(
            "hosts {} selects {} ports {}",
            spec["hosts"][0].as_str().unwrap_or_default(),
            labels(&spec["workloadSelector"]["labels"]),
            ports(&spec["ports"], "number")
        ),
        MeshKind::Sidecar => format!(
            "proxies {} inbound {}",
            labels(&spec["workloadSelector"]["labels"]),
            spec["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| l["defaultEndpoint"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// How many of the `leaving` instances had their pre-termination hook
/// answered CONTINUE; an error unless every one was, exactly once.
fn answered_hooks(sim: &SimCloud, leaving: &[String]) -> Result<usize, AppError> {
    let completed = sim.completed_actions();
    for id in leaving {
        let answers: Vec<_> = completed
            .iter()
            .filter(|(action, _, _)| &action.instance_id == id)
            .collect();
        match answers.as_slice() {
            [(_, Outcome::Continue, _)] => {}
            [] => {
                return Err(AppError::Invalid(format!(
                    "the pre-termination hook of {id} was not answered within {}s",
                    STEP_TIMEOUT.as_secs()
                )));
            }
            other => {
                return Err(AppError::Invalid(format!(
                    "the pre-termination hook of {id} was answered {:?}, not CONTINUE once",
                    other.iter().map(|(_, o, _)| o).collect::<Vec<_>>()
                )));
            }
        }
    }
    Ok(leaving.len())
}

fn label(obj: &DynamicObject, key: &str) -> String {
    obj.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .cloned()
        .unwrap_or_default()
}

/// Polls the API server until `done` holds for the entries; returns how long.
async fn wait_for(
    entries: &Api<DynamicObject>,
    done: impl Fn(&[DynamicObject]) -> bool,
) -> Result<Duration, AppError> {
    let started = Instant::now();
    loop {
        let list = entries.list(&ListParams::default()).await?;
        if done(&list.items) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > STEP_TIMEOUT {
            return Err(AppError::Invalid(format!(
                "the demo step did not converge within {}s ({} entries seen)",
                STEP_TIMEOUT.as_secs(),
                list.items.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn show(
    out: &mut impl Write,
    title: &str,
    took: Duration,
    entries: &Api<DynamicObject>,
) -> Result<(), AppError> {
    say(
        out,
        format!(
            "\n{title}: reached the API server in {} ms",
            took.as_millis()
        ),
    );
    let mut list = entries.list(&ListParams::default()).await?.items;
    list.sort_by_key(|o| {
        (
            label(o, keys::WORKLOAD),
            o.metadata.name.clone().unwrap_or_default(),
        )
    });
    say(
        out,
        format!(
            "  {:<32} {:<9} {:<10} {:<11} {:<14} {:<8} {}",
            "NAME", "WORKLOAD", "ADDRESS", "NETWORK", "SERVICE ACCT", "VERSION", "LOCALITY"
        ),
    );
    for o in &list {
        let spec = &o.data["spec"];
        say(
            out,
            format!(
                "  {:<32} {:<9} {:<10} {:<11} {:<14} {:<8} {}",
                o.metadata.name.clone().unwrap_or_default(),
                label(o, keys::WORKLOAD),
                spec["address"].as_str().unwrap_or(""),
                spec["network"].as_str().unwrap_or(""),
                spec["serviceAccount"].as_str().unwrap_or(""),
                label(o, "version"),
                spec["locality"].as_str().unwrap_or(""),
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_hook_fails_the_demo() {
        let sim = SimCloud::new();
        sim.ensure_group(GROUP, "us-east-1");
        sim.set_termination_hook(GROUP, true).unwrap();
        sim.add_instance(
            GROUP,
            SimInstance::running("i-01", std::net::Ipv4Addr::new(10, 0, 1, 1)),
        )
        .unwrap();
        let leaving = sim.scale_in(GROUP, 1).unwrap();
        let err = answered_hooks(&sim, &leaving).unwrap_err().to_string();
        assert!(err.contains("was not answered"), "{err}");
    }
}
