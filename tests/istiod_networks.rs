//! Multi-network meshes as a real istiod serves them (issue 19): endpoints
//! on a network other than the client's, reached through that network's
//! gateway, and meshmirror's `NetworksReachable` condition beside what
//! istiod does with a network that has no gateway.
//!
//! istiod turns network filtering on for the whole mesh as soon as any
//! network gateway exists, which would change what every other test of the
//! run's shared istiod sees. So this test starts a control plane of its
//! own (`RealKube::start`, about 12 s) and its own istiod on it
//! (`tests/istiod/up.sh`, 1-3 s), and meshmirror runs in-process against it
//! with the admin's client: nothing here is shared, and names need no
//! tenancy prefix.
//!
//! Needs the real control plane's programs and istiod built
//! (`scripts/install-test-tools.sh`); fails, naming the install, without.
//!
//! Expected values are written from the test's inputs (the sim's
//! instances, the mirrors' specs, the gateway Service) and Istio's
//! documented mapping.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{ControllerTask, Failures, check_failures, condition, mirror_yaml};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, PostParams};
use meshmirror::app::RunOptions;
use meshmirror::crd::{ScalingGroupMirror, ScalingGroupMirrorStatus};
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::realkube::RealKube;
use meshmirror_testkit::xds::{EdsEndpoint, Istiod, ProxyNode, XdsClient};

/// The gateway of network `net-gw`: its Service's external IP (TEST-NET-3,
/// routed nowhere) and Istio's default gateway port.
const GATEWAY_IP: &str = "203.0.113.10";
const GATEWAY_PORT: u32 = 15443;

/// Starts istiod on the control plane whose admin kubeconfig is
/// `kubeconfig`; `tests/kube/down.sh` (RealKube's drop) stops it with the
/// control plane.
fn start_istiod(kubeconfig: &Path) -> Istiod {
    Istiod::start_on(
        kubeconfig
            .parent()
            .expect("the kubeconfig is in the state dir"),
    )
}

async fn create<K>(api: &Api<K>, object: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let what = object.to_string();
    let object: K = serde_json::from_value(object).expect("an object of the kind");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {what}: {e}"));
}

async fn status(client: &Client, ns: &str) -> ScalingGroupMirrorStatus {
    let api: Api<ScalingGroupMirror> = Api::namespaced(client.clone(), ns);
    api.get("web")
        .await
        .expect("get mirror")
        .status
        .unwrap_or_default()
}

/// Waits until mirror `ns/web`'s condition NetworksReachable has `status`,
/// and returns its (reason, message).
async fn wait_networks_condition(
    client: &Client,
    ns: &str,
    status_wanted: &str,
    failures: &Failures,
) -> (String, String) {
    let started = std::time::Instant::now();
    loop {
        check_failures(failures);
        let s = status(client, ns).await;
        if let Some(c) = condition(&s, "NetworksReachable")
            && c.status == status_wanted
        {
            return (c.reason.clone(), c.message.clone());
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for NetworksReachable={status_wanted} on {ns}/web; have {s:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    address: String,
    port: u32,
    zone: String,
    weight: u32,
}

fn seen(endpoints: &[EdsEndpoint]) -> BTreeSet<Seen> {
    endpoints
        .iter()
        .map(|e| Seen {
            address: e.address.clone(),
            port: e.port,
            zone: format!("{}/{}", e.region, e.zone),
            weight: e.weight,
        })
        .collect()
}

fn at(address: &str, port: u32, zone: &str, weight: u32) -> Seen {
    Seen {
        address: address.into(),
        port,
        zone: format!("us-east-1/{zone}"),
        weight,
    }
}

fn exactly(expected: &[Seen]) -> impl Fn(&[EdsEndpoint]) -> bool {
    let expected: BTreeSet<Seen> = expected.iter().cloned().collect();
    move |endpoints| endpoints.len() == expected.len() && seen(endpoints) == expected
}

/// One workload `api` behind a ServiceEntry (port 80 to the VMs' 8080),
/// weight 3, with a service account (so Istio mutual TLS, which a gateway
/// needs: it routes by SNI).
fn api_on(network: &str) -> String {
    format!(
        "  network: {network}
  workloads:
    - name: api
      labels: {{app: api}}
      ports: {{http: 8080}}
      serviceAccount: api-sa
      weight: 3
      service: {{kind: ServiceEntry, ports: {{http: {{number: 80}}}}}}
"
    )
}

#[tokio::test]
async fn endpoints_on_another_network_are_reached_through_its_gateway_and_a_network_without_one_is_flagged()
 {
    let kube = RealKube::start();
    let client = kube.admin().await;

    // The cluster's own network (istiod's namespace's label) and the
    // gateway of net-gw: a Service in istio-system labelled with the
    // network, listening on 15443, with an external IP. net-dark has none.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(
        &namespaces,
        serde_json::json!({"metadata": {"name": "istio-system",
            "labels": {"topology.istio.io/network": "net-pods"}}}),
    )
    .await;
    create(
        &Api::<Service>::namespaced(client.clone(), "istio-system"),
        serde_json::json!({
            "metadata": {"name": "eastwest", "labels": {"topology.istio.io/network": "net-gw"}},
            "spec": {
                "ports": [{"name": "tls", "port": GATEWAY_PORT}],
                "externalIPs": [GATEWAY_IP],
            },
        }),
    )
    .await;
    let istiod = start_istiod(kube.kubeconfig());

    // Two groups: `gw` on net-gw (two VMs in us-east-1a, one in 1b) and
    // `dark` on net-dark (one VM).
    let sim = SimCloud::new();
    for (group, instances) in [
        (
            "gw",
            vec![
                ("i-01", [10, 1, 0, 1], "us-east-1a"),
                ("i-02", [10, 1, 0, 2], "us-east-1a"),
                ("i-03", [10, 1, 0, 3], "us-east-1b"),
            ],
        ),
        ("dark", vec![("i-11", [10, 2, 0, 1], "us-east-1a")]),
    ] {
        sim.ensure_group(group, "us-east-1");
        for (id, ip, zone) in instances {
            sim.add_instance(group, SimInstance::running(id, ip.into()).with_zone(zone))
                .unwrap();
        }
    }
    let failures = Failures::default();
    let _controller = ControllerTask::spawn(
        "main",
        client.clone(),
        RunOptions {
            sim_cloud: Some(sim.clone()),
            kube_qps: 0.0,
            allow_all_groups: true,
            ..RunOptions::default()
        },
        &failures,
    );
    for (ns, group, network) in [("gw-app", "gw", "net-gw"), ("dark-app", "dark", "net-dark")] {
        create(&namespaces, serde_json::json!({"metadata": {"name": ns}})).await;
        let yaml = mirror_yaml(ns, "web", &api_on(network))
            .replace("group: web", &format!("group: {group}"));
        let mirror: ScalingGroupMirror = serde_yaml::from_str(&yaml).expect("the mirror parses");
        Api::<ScalingGroupMirror>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &mirror)
            .await
            .expect("mirror created");
    }
    let gw_cluster = "outbound|80||api.gw-app.svc.cluster.local";
    let dark_cluster = "outbound|80||api.dark-app.svc.cluster.local";

    // meshmirror's view: net-gw has a gateway, net-dark none.
    let (reason, message) = wait_networks_condition(&client, "gw-app", "True", &failures).await;
    assert_eq!(reason, "Reachable", "{message}");
    assert!(message.contains("\"net-gw\""), "{message}");
    let (reason, message) = wait_networks_condition(&client, "dark-app", "False", &failures).await;
    assert_eq!(reason, "NetworkWithoutGateway", "{message}");
    assert!(message.contains("\"net-dark\""), "{message}");

    // A pod on the cluster's network gets, instead of net-gw's VMs, the
    // gateway's address and port: one endpoint per locality, weighing what
    // the VMs behind it weigh together (two of weight 3 in us-east-1a, one
    // in us-east-1b), marked for Istio mutual TLS (the gateway routes by
    // SNI) and naming no workload (the gateway stands for several).
    let pod = XdsClient::connect(
        istiod.xds,
        ProxyNode::pod(
            "10.244.0.10",
            "sleep-7d9f",
            "client",
            &[("app", "sleep")],
            "sleep",
        )
        .network("net-pods"),
    )
    .await;
    let gateway = pod
        .wait_endpoints(
            gw_cluster,
            "net-gw's VMs behind its gateway",
            exactly(&[
                at(GATEWAY_IP, GATEWAY_PORT, "us-east-1a", 6),
                at(GATEWAY_IP, GATEWAY_PORT, "us-east-1b", 3),
            ]),
        )
        .await;
    for e in &gateway {
        assert_eq!(
            e.metadata,
            serde_json::json!({
                "envoy.transport_socket_match": {"tlsMode": "istio"},
                "istio": {"workload": ";;;;Kubernetes"},
            }),
            "{e}"
        );
    }

    // net-dark has no gateway: istiod sends its VM's own address to the
    // pod on net-pods all the same (in sidecar mode a network without a
    // gateway is taken as reachable directly; pilot/pkg/xds/endpoints/
    // ep_filters.go keeps that on purpose). The endpoint is not dropped,
    // and a client that cannot route to 10.2.0.1 fails to connect: that
    // is what meshmirror's NetworkWithoutGateway condition warns of.
    pod.wait_endpoints(
        dark_cluster,
        "net-dark's VM as it is, though no gateway leads there",
        exactly(&[at("10.2.0.1", 8080, "us-east-1a", 3)]),
    )
    .await;

    // A VM of net-gw reaches its own network's VMs directly.
    let vm = XdsClient::connect(
        istiod.xds,
        ProxyNode::vm(
            "10.1.0.1",
            "i-01",
            "gw-app",
            &[("app", "api")],
            "api-sa",
            "api",
        )
        .network("net-gw"),
    )
    .await;
    vm.wait_endpoints(
        gw_cluster,
        "net-gw's VMs directly, seen from one of them",
        exactly(&[
            at("10.1.0.1", 8080, "us-east-1a", 3),
            at("10.1.0.2", 8080, "us-east-1a", 3),
            at("10.1.0.3", 8080, "us-east-1b", 3),
        ]),
    )
    .await;

    // A scale-out behind the gateway adds no endpoint for the pod: the
    // gateway's endpoint in that locality weighs more.
    sim.add_instance(
        "gw",
        SimInstance::running("i-04", [10, 1, 0, 4].into()).with_zone("us-east-1b"),
    )
    .unwrap();
    pod.wait_endpoints(
        gw_cluster,
        "the gateway in us-east-1b weighing two VMs",
        exactly(&[
            at(GATEWAY_IP, GATEWAY_PORT, "us-east-1a", 6),
            at(GATEWAY_IP, GATEWAY_PORT, "us-east-1b", 6),
        ]),
    )
    .await;
    vm.wait_endpoints(
        gw_cluster,
        "the new VM, directly",
        exactly(&[
            at("10.1.0.1", 8080, "us-east-1a", 3),
            at("10.1.0.2", 8080, "us-east-1a", 3),
            at("10.1.0.3", 8080, "us-east-1b", 3),
            at("10.1.0.4", 8080, "us-east-1b", 3),
        ]),
    )
    .await;
    check_failures(&failures);
}
