//! What a real istiod tells proxies about the objects meshmirror writes
//! (issue 19): meshmirror runs in-process against the run's shared real
//! control plane with the simulated cloud, and a small xDS client
//! (`meshmirror_testkit::xds`) connects to the run's istiod as a pod's
//! sidecar in another namespace, or as the sidecar of one of the group's
//! VMs, and reads CDS and EDS.
//!
//! Real backend only: `MESHMIRROR_KUBE=real` with `MESHMIRROR_KUBE_SHARED`
//! (scripts/test.sh's real pass). Without them every test fails, saying how
//! to run it ([`Istiod::shared`]).
//!
//! Expected values are written from each test's inputs (the sim's
//! instances, the mirror's spec) and Istio's documented mapping, never read
//! back from what meshmirror wrote.
//!
//! On the shared control plane each test's namespaces carry a prefix of its
//! own (`kubeproxy::tenancy`): meshmirror sees `eds-<id>`, istiod sees
//! `<id>-eds-<id>`. A ServiceEntry's default host is made from the
//! namespace meshmirror sees (`api.eds-<id>.svc.cluster.local`) and a host
//! is seen by the whole mesh, so the mirror's namespace carries the test's
//! id too ([`unique_ns`]): a second run on the same control plane, or a
//! retry, must not find the first one's ServiceEntry under the same host.

mod common;

use std::collections::BTreeSet;

use common::{Harness, mirror_yaml};
use meshmirror_provider::Health;
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::TestKube;
use meshmirror_testkit::xds::{
    EdsEndpoint, Istiod, ProxyNode, XdsClient, cluster_sans, transport_socket_match_names,
};

/// The sim group `web` (region us-east-1) with the given instances.
fn sim(instances: &[(&str, [u8; 4], &str)]) -> SimCloud {
    let sim = SimCloud::new();
    sim.ensure_group("web", "us-east-1");
    for (id, ip, zone) in instances {
        sim.add_instance(
            "web",
            SimInstance::running(*id, (*ip).into()).with_zone(*zone),
        )
        .unwrap();
    }
    sim
}

/// A namespace name for the mirror that no other test (of this run or an
/// earlier one on the same control plane) uses: `base-<the test's id>`.
fn unique_ns(h: &Harness, base: &str) -> String {
    match &h.server {
        TestKube::Real(proxy) => {
            format!("{base}-{}", proxy.namespace_prefix().trim_end_matches('-'))
        }
        TestKube::Fake(_) => unreachable!("Istiod::shared() refuses the fake backend"),
    }
}

/// The server's name of the test's namespace `ns`.
fn server_ns(h: &Harness, ns: &str) -> String {
    match &h.server {
        TestKube::Real(proxy) => format!("{}{ns}", proxy.namespace_prefix()),
        TestKube::Fake(_) => unreachable!("Istiod::shared() refuses the fake backend"),
    }
}

/// A sidecar of a pod in namespace `client` (another namespace than the
/// mirror's), on the default network.
async fn pod_client(h: &Harness, istiod: &Istiod) -> XdsClient {
    h.create_namespace("client").await;
    let ns = server_ns(h, "client");
    XdsClient::connect(
        istiod.xds,
        ProxyNode::pod(
            "10.244.0.10",
            "sleep-7d9f",
            &ns,
            &[("app", "sleep")],
            "sleep",
        ),
    )
    .await
}

/// One expected endpoint: address, port, region, zone, weight, health.
///
/// The health of a WorkloadEntry's endpoint, healthy or without health
/// checks, is UNKNOWN: istiod leaves `health_status` unset, and Envoy
/// balances to UNKNOWN endpoints as to healthy ones. An unhealthy entry's
/// endpoint is not sent at all (see the health test).
fn ep(address: &str, port: u32, zone: &str, weight: u32, health: &str) -> Expect {
    Expect {
        address: address.into(),
        port,
        region: "us-east-1".into(),
        zone: zone.into(),
        weight,
        health: health.into(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Expect {
    address: String,
    port: u32,
    region: String,
    zone: String,
    weight: u32,
    health: String,
}

fn seen(endpoints: &[EdsEndpoint]) -> BTreeSet<Expect> {
    endpoints
        .iter()
        .map(|e| Expect {
            address: e.address.clone(),
            port: e.port,
            region: e.region.clone(),
            zone: e.zone.clone(),
            weight: e.weight,
            health: e.health.clone(),
        })
        .collect()
}

fn exactly(expected: &[Expect]) -> impl Fn(&[EdsEndpoint]) -> bool {
    let expected: BTreeSet<Expect> = expected.iter().cloned().collect();
    move |endpoints| endpoints.len() == expected.len() && seen(endpoints) == expected
}

/// One workload `api` behind a ServiceEntry (clients use port 80, the VMs
/// listen on 8080), with a service account, a weight and a network.
const API_BEHIND_A_SERVICE_ENTRY: &str = "  network: vm-net
  workloads:
    - name: api
      labels: {app: api}
      ports: {http: 8080}
      serviceAccount: api-sa
      weight: 3
      service: {kind: ServiceEntry, ports: {http: {number: 80}}}
";

#[tokio::test]
async fn eds_holds_exactly_the_groups_vms_with_their_address_port_locality_weight_and_identity() {
    let istiod = Istiod::shared().await;
    let h = Harness::start(sim(&[
        ("i-01", [10, 0, 1, 1], "us-east-1a"),
        ("i-02", [10, 0, 1, 2], "us-east-1b"),
        ("i-03", [10, 0, 1, 3], "us-east-1a"),
    ]))
    .await;
    let ns = unique_ns(&h, "eds");
    h.create_namespace(&ns).await;
    h.create_mirror(&mirror_yaml(&ns, "web", API_BEHIND_A_SERVICE_ENTRY))
        .await;
    let server = server_ns(&h, &ns);
    // The ServiceEntry's host is api.<namespace>.svc.cluster.local (the
    // namespace as meshmirror sees it), its port 80; istiod sees the
    // objects in `server`.
    let cluster = &format!("outbound|80||api.{ns}.svc.cluster.local");

    let pod = pod_client(&h, &istiod).await;
    let endpoints = pod
        .wait_endpoints(
            cluster,
            "the three VMs on port 8080 in their zones with weight 3",
            exactly(&[
                ep("10.0.1.1", 8080, "us-east-1a", 3, "UNKNOWN"),
                ep("10.0.1.2", 8080, "us-east-1b", 3, "UNKNOWN"),
                ep("10.0.1.3", 8080, "us-east-1a", 3, "UNKNOWN"),
            ]),
        )
        .await;
    // What istiod puts in each endpoint's metadata: the tlsMode (the entry
    // has a service account, so Istio mutual TLS) and its telemetry label
    // `workload;namespace;canonical service;canonical revision;cluster`
    // (workload name and canonical service from the entry's labels: the
    // workload-name label meshmirror sets and `app`). No identity and no
    // network: EDS carries neither.
    for e in &endpoints {
        assert_eq!(
            e.metadata,
            serde_json::json!({
                "envoy.transport_socket_match": {"tlsMode": "istio"},
                "istio": {"workload": format!("api;{server};api;;Kubernetes")},
            }),
            "{e}"
        );
    }

    // The identity is in CDS: the cluster's Istio mutual TLS transport
    // socket (auto mTLS: the socket match for endpoints with tlsMode istio)
    // accepts exactly the SPIFFE identity of the workload's service
    // account.
    let sa = format!("spiffe://cluster.local/ns/{server}/sa/api-sa");
    let found = pod
        .wait_cluster(cluster, "the cluster with the workload's identity", |c| {
            c.is_some_and(|c| cluster_sans(c) == [sa.clone()])
        })
        .await
        .expect("the cluster");
    assert_eq!(
        transport_socket_match_names(&found),
        ["tlsMode-istio", "tlsMode-disabled"]
    );

    // The network is not in EDS either (it decides only which endpoints a
    // proxy gets, and through which gateway). istiod's registry holds it
    // for each endpoint, with the identity: its debug page says so.
    let shards = istiod.debug_json("/debug/endpointShardz");
    let host = format!("api.{ns}.svc.cluster.local");
    let mut registry: Vec<(String, String, String)> = shards[&host][&server]["Shards"]
        .as_object()
        .unwrap_or_else(|| panic!("no shards for {host} in {server}: {shards:#}"))
        .values()
        .flat_map(|eps| eps.as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["Addresses"][0].as_str().unwrap_or_default().to_string(),
                e["Network"].as_str().unwrap_or_default().to_string(),
                e["ServiceAccount"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    registry.sort();
    let vm = |ip: &str| (ip.to_string(), "vm-net".to_string(), sa.clone());
    assert_eq!(
        registry,
        [vm("10.0.1.1"), vm("10.0.1.2"), vm("10.0.1.3")],
        "istiod's endpoints of {host}"
    );

    // The network: a VM of the group (on vm-net) sees the same endpoints;
    // with no gateway for any network, istiod sends every network's
    // endpoints as they are.
    let vm = XdsClient::connect(
        istiod.xds,
        ProxyNode::vm(
            "10.0.1.2",
            "i-02",
            &server,
            &[("app", "api")],
            "api-sa",
            "api",
        )
        .network("vm-net"),
    )
    .await;
    vm.wait_endpoints(
        cluster,
        "the same three VMs, seen from one of them",
        exactly(&[
            ep("10.0.1.1", 8080, "us-east-1a", 3, "UNKNOWN"),
            ep("10.0.1.2", 8080, "us-east-1b", 3, "UNKNOWN"),
            ep("10.0.1.3", 8080, "us-east-1a", 3, "UNKNOWN"),
        ]),
    )
    .await;
}

#[tokio::test]
async fn scale_out_adds_endpoints_and_scale_in_removes_them() {
    let istiod = Istiod::shared().await;
    let h = Harness::start(sim(&[
        ("i-01", [10, 0, 2, 1], "us-east-1a"),
        ("i-02", [10, 0, 2, 2], "us-east-1b"),
    ]))
    .await;
    let ns = unique_ns(&h, "scale");
    h.create_namespace(&ns).await;
    h.create_mirror(&mirror_yaml(&ns, "web", API_BEHIND_A_SERVICE_ENTRY))
        .await;
    let cluster = &format!("outbound|80||api.{ns}.svc.cluster.local");
    let pod = pod_client(&h, &istiod).await;
    pod.wait_endpoints(
        cluster,
        "the first two VMs",
        exactly(&[
            ep("10.0.2.1", 8080, "us-east-1a", 3, "UNKNOWN"),
            ep("10.0.2.2", 8080, "us-east-1b", 3, "UNKNOWN"),
        ]),
    )
    .await;

    // Scale-out: two VMs join.
    for (id, ip, zone) in [
        ("i-03", [10, 0, 2, 3], "us-east-1c"),
        ("i-04", [10, 0, 2, 4], "us-east-1a"),
    ] {
        h.sim
            .add_instance("web", SimInstance::running(id, ip.into()).with_zone(zone))
            .unwrap();
    }
    pod.wait_endpoints(
        cluster,
        "four VMs after the scale-out",
        exactly(&[
            ep("10.0.2.1", 8080, "us-east-1a", 3, "UNKNOWN"),
            ep("10.0.2.2", 8080, "us-east-1b", 3, "UNKNOWN"),
            ep("10.0.2.3", 8080, "us-east-1c", 3, "UNKNOWN"),
            ep("10.0.2.4", 8080, "us-east-1a", 3, "UNKNOWN"),
        ]),
    )
    .await;

    // Scale-in (no hook: the instances vanish): the newest two leave.
    assert_eq!(h.sim.scale_in("web", 2).unwrap(), ["i-04", "i-03"]);
    pod.wait_endpoints(
        cluster,
        "the first two VMs again after the scale-in",
        exactly(&[
            ep("10.0.2.1", 8080, "us-east-1a", 3, "UNKNOWN"),
            ep("10.0.2.2", 8080, "us-east-1b", 3, "UNKNOWN"),
        ]),
    )
    .await;
}

#[tokio::test]
async fn scale_in_through_the_hook_removes_the_endpoint_before_the_hook_is_answered() {
    let istiod = Istiod::shared().await;
    let sim = sim(&[
        ("i-01", [10, 0, 3, 1], "us-east-1a"),
        ("i-02", [10, 0, 3, 2], "us-east-1b"),
    ]);
    sim.set_termination_hook("web", true).unwrap();
    let h = Harness::start(sim).await;
    let ns = unique_ns(&h, "hook");
    h.create_namespace(&ns).await;
    // A drain far longer than the test: the hook stays unanswered while the
    // test looks.
    let spec = format!("{API_BEHIND_A_SERVICE_ENTRY}  lifecycle: {{drainSeconds: 3600}}\n");
    h.create_mirror(&mirror_yaml(&ns, "web", &spec)).await;
    let cluster = &format!("outbound|80||api.{ns}.svc.cluster.local");
    let pod = pod_client(&h, &istiod).await;
    pod.wait_endpoints(
        cluster,
        "both VMs",
        exactly(&[
            ep("10.0.3.1", 8080, "us-east-1a", 3, "UNKNOWN"),
            ep("10.0.3.2", 8080, "us-east-1b", 3, "UNKNOWN"),
        ]),
    )
    .await;

    assert_eq!(h.sim.scale_in("web", 1).unwrap(), ["i-02"]);
    pod.wait_endpoints(
        cluster,
        "i-02 gone while its hook waits",
        exactly(&[ep("10.0.3.1", 8080, "us-east-1a", 3, "UNKNOWN")]),
    )
    .await;
    let pending: Vec<String> = h
        .sim
        .pending_actions()
        .into_iter()
        .map(|a| a.instance_id)
        .collect();
    assert_eq!(pending, ["i-02"], "the hook is not answered yet");
    assert!(
        h.sim.completed_actions().is_empty(),
        "{:?}",
        h.sim.completed_actions()
    );
}

#[tokio::test]
async fn two_applications_on_one_vm_give_two_services_each_with_only_its_own_endpoints_and_identity()
 {
    let istiod = Istiod::shared().await;
    let h = Harness::start(sim(&[
        ("i-01", [10, 0, 4, 1], "us-east-1a"),
        ("i-02", [10, 0, 4, 2], "us-east-1b"),
    ]))
    .await;
    let ns = unique_ns(&h, "two-apps");
    h.create_namespace(&ns).await;
    // The api behind a ServiceEntry (port 80 to the VMs' 8080), the exporter
    // behind a Kubernetes Service (port 9100, the same as the VMs').
    let spec = "  workloads:
    - name: api
      labels: {app: api}
      ports: {http: 8080}
      serviceAccount: api-sa
      service: {kind: ServiceEntry, ports: {http: {number: 80}}}
    - name: exporter
      labels: {app: exporter}
      ports: {http-metrics: 9100}
      serviceAccount: exporter-sa
      service: {kind: Service}
";
    h.create_mirror(&mirror_yaml(&ns, "web", spec)).await;
    let server = server_ns(&h, &ns);
    let api = &format!("outbound|80||api.{ns}.svc.cluster.local");
    // A Kubernetes Service's host has the namespace istiod sees.
    let exporter = format!("outbound|9100||exporter.{server}.svc.cluster.local");

    let pod = pod_client(&h, &istiod).await;
    // Weight unset in the spec: istiod's default, 1.
    pod.wait_endpoints(
        api,
        "the api on 8080 of both VMs, nothing else",
        exactly(&[
            ep("10.0.4.1", 8080, "us-east-1a", 1, "UNKNOWN"),
            ep("10.0.4.2", 8080, "us-east-1b", 1, "UNKNOWN"),
        ]),
    )
    .await;
    let exporters = pod
        .wait_endpoints(
            &exporter,
            "the exporter on 9100 of both VMs, nothing else",
            exactly(&[
                ep("10.0.4.1", 9100, "us-east-1a", 1, "UNKNOWN"),
                ep("10.0.4.2", 9100, "us-east-1b", 1, "UNKNOWN"),
            ]),
        )
        .await;
    for e in &exporters {
        assert_eq!(
            e.meta("istio", "workload"),
            Some(format!("exporter;{server};exporter;;Kubernetes").as_str()),
            "{e}"
        );
    }

    let api_sa = format!("spiffe://cluster.local/ns/{server}/sa/api-sa");
    let exporter_sa = format!("spiffe://cluster.local/ns/{server}/sa/exporter-sa");
    pod.wait_cluster(api, "the api's identity only", |c| {
        c.is_some_and(|c| cluster_sans(c) == [api_sa.clone()])
    })
    .await;
    pod.wait_cluster(&exporter, "the exporter's identity only", |c| {
        c.is_some_and(|c| cluster_sans(c) == [exporter_sa.clone()])
    })
    .await;
}

#[tokio::test]
async fn health_cloud_with_an_unhealthy_vm_takes_its_endpoint_out_of_eds() {
    let istiod = Istiod::shared().await;
    let h = Harness::start(sim(&[
        ("i-01", [10, 0, 5, 1], "us-east-1a"),
        ("i-02", [10, 0, 5, 2], "us-east-1b"),
    ]))
    .await;
    let ns = unique_ns(&h, "health");
    h.create_namespace(&ns).await;
    let spec = format!("{API_BEHIND_A_SERVICE_ENTRY}  health: Cloud\n");
    h.create_mirror(&mirror_yaml(&ns, "web", &spec)).await;
    let cluster = &format!("outbound|80||api.{ns}.svc.cluster.local");
    let pod = pod_client(&h, &istiod).await;
    pod.wait_endpoints(
        cluster,
        "both VMs, in service",
        exactly(&[
            ep("10.0.5.1", 8080, "us-east-1a", 3, "UNKNOWN"),
            ep("10.0.5.2", 8080, "us-east-1b", 3, "UNKNOWN"),
        ]),
    )
    .await;

    // meshmirror marks the entry unhealthy (the health-checks annotation
    // and condition Healthy=False); istiod then drops the WorkloadEntry
    // from its registry altogether (PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS,
    // on by default), so its endpoint leaves EDS; it is not sent as
    // UNHEALTHY, whatever PILOT_SEND_UNHEALTHY_ENDPOINTS says.
    h.sim.set_health("web", "i-02", Health::Unhealthy).unwrap();
    pod.wait_endpoints(
        cluster,
        "i-02 out once the cloud calls it unhealthy",
        exactly(&[ep("10.0.5.1", 8080, "us-east-1a", 3, "UNKNOWN")]),
    )
    .await;

    // And back when it recovers.
    h.sim.set_health("web", "i-02", Health::Healthy).unwrap();
    pod.wait_endpoints(
        cluster,
        "i-02 back once healthy",
        exactly(&[
            ep("10.0.5.1", 8080, "us-east-1a", 3, "UNKNOWN"),
            ep("10.0.5.2", 8080, "us-east-1b", 3, "UNKNOWN"),
        ]),
    )
    .await;
}
