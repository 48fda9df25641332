//! What a real istiod tells proxies about the objects meshmirror writes
//! (issue 19): meshmirror runs in-process against the run's shared real
//! control plane with the simulated cloud, and a small xDS client
//! (`meshmirror_testkit::xds`) connects to the run's istiod as a pod's
//! sidecar in another namespace, or as the sidecar of one of the group's
//! VMs, and reads CDS, LDS and EDS. Multi-network meshes are in
//! tests/istiod_networks.rs, on an istiod of their own: a network gateway
//! changes what istiod sends every proxy of the mesh.
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
#[path = "common/istiod.rs"]
mod istiod_common;

use std::collections::BTreeSet;

use common::{Harness, mirror_yaml};
use istiod_common::{pod_client, server_ns, test_id, unique_ns};
use meshmirror_provider::Health;
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::xds::{
    EdsEndpoint, FilterChain, Istiod, ProxyNode, XdsClient, cluster_sans, cluster_static_endpoints,
    filter_chains, listener_port, transport_socket_match_names,
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

/// Creates namespace `ns` with a Service `db` (TCP port 5432, no selector)
/// directly on the server, past the test's tenancy proxy, and returns the
/// cluster IP the API server gave it. A Sidecar's egress host names a
/// namespace as istiod sees it, and the proxy takes its prefix out of every
/// answer (meshmirror would read `<prefix>other/*` as `other/*`), so these
/// namespaces have names of their own that end with the test's id.
async fn server_db_service(ns: &str) -> String {
    use k8s_openapi::api::core::v1::{Namespace, Service};
    let admin = meshmirror_testkit::realkube::RealKube::shared()
        .admin()
        .await;
    let namespaces: kube::Api<Namespace> = kube::Api::all(admin.clone());
    let namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    namespaces
        .create(&Default::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {ns}: {e}"));
    let services: kube::Api<Service> = kube::Api::namespaced(admin, ns);
    let db = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db"},
        "spec": {"ports": [{"name": "tcp-db", "port": 5432}]},
    }))
    .unwrap();
    let created = services
        .create(&Default::default(), &db)
        .await
        .unwrap_or_else(|e| panic!("creating Service db in {ns}: {e}"));
    created
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_else(|| panic!("Service db in {ns} has no cluster IP"))
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> BTreeSet<String> {
    items.iter().map(|i| name(i).to_string()).collect()
}

#[tokio::test]
async fn the_vms_proxy_gets_inbound_listeners_for_each_workload_port_and_outbound_clusters_only_for_the_sidecars_egress_hosts()
 {
    let istiod = Istiod::shared().await;
    let h = Harness::start(sim(&[("i-01", [10, 0, 6, 1], "us-east-1a")])).await;
    let ns = unique_ns(&h, "sidecar");
    h.create_namespace(&ns).await;
    let server = server_ns(&h, &ns);
    let id = test_id(&h);
    // Two other namespaces with a Service each: the Sidecar lists the
    // first, not the second.
    let listed = format!("egress-listed-{id}");
    let unlisted = format!("egress-unlisted-{id}");
    let listed_ip = server_db_service(&listed).await;
    server_db_service(&unlisted).await;
    // Two ports on the VMs (HTTP and gRPC, by their names), the api's
    // ServiceEntry (http on 80; grpc-admin, not listed, on its own 9090),
    // and the Sidecar: the VMs' proxies carry class=web-vm; egress to the
    // mirror's namespace and `listed` only; REGISTRY_ONLY.
    let spec = format!(
        "  network: vm-net
  workloads:
    - name: api
      labels: {{app: api}}
      ports: {{http: 8080, grpc-admin: 9090}}
      serviceAccount: api-sa
      service: {{kind: ServiceEntry, ports: {{http: {{number: 80}}}}}}
  sidecar:
    workloadSelector: {{class: web-vm}}
    egressHosts: [\"./*\", \"{listed}/*\"]
    outboundTrafficPolicy: REGISTRY_ONLY
"
    );
    h.create_mirror(&mirror_yaml(&ns, "web", &spec)).await;
    let api = |port: u32| format!("outbound|{port}||api.{ns}.svc.cluster.local");
    let db = |ns: &str| format!("outbound|5432||db.{ns}.svc.cluster.local");

    // A pod without a Sidecar sees every namespace's db: the absence below
    // is the Sidecar's doing.
    let pod = pod_client(&h, &istiod).await;
    pod.wait_clusters("both dbs, for a proxy no Sidecar selects", |cs| {
        let have = names(cs, |c| &c.name);
        have.contains(&db(&listed)) && have.contains(&db(&unlisted))
    })
    .await;

    // The VM's sidecar, as istio-agent on i-01 describes it, with the
    // labels of its cluster.env (ISTIO_METAJSON_LABELS): the workload's
    // app=api and the class=web-vm the Sidecar selects. istiod takes the
    // proxy's labels from i-01's WorkloadEntry (app=api, no class) plus
    // the static labels istio-agent sends; without the latter the Sidecar
    // would select nothing (ProxyNode::vm sends them).
    let vm = XdsClient::connect(
        istiod.xds,
        ProxyNode::vm(
            "10.0.6.1",
            "i-01",
            &server,
            &[("app", "api"), ("class", "web-vm")],
            "api-sa",
            "api",
        )
        .network("vm-net"),
    )
    .await;

    // CDS: outbound clusters for the egress hosts only (the api's two ports
    // in the mirror's namespace, listed's db; not unlisted's db nor the
    // API server's `kubernetes.default`), an inbound cluster per ingress
    // port whose one endpoint is the Sidecar's defaultEndpoint, and
    // Envoy's three fixed clusters.
    let expected: BTreeSet<String> = [
        "BlackHoleCluster".to_string(),
        "InboundPassthroughCluster".into(),
        "PassthroughCluster".into(),
        "inbound|8080||".into(),
        "inbound|9090||".into(),
        api(80),
        api(9090),
        db(&listed),
    ]
    .into();
    let clusters = vm
        .wait_clusters("the clusters the Sidecar shapes", |cs| {
            names(cs, |c| &c.name) == expected
        })
        .await;
    for (name, port) in [("inbound|8080||", 8080), ("inbound|9090||", 9090)] {
        let c = clusters
            .iter()
            .find(|c| c.name == name)
            .expect("listed above");
        assert_eq!(
            cluster_static_endpoints(c),
            [("127.0.0.1".to_string(), port)],
            "{name}: the ingress listener's defaultEndpoint"
        );
    }

    // LDS: one inbound listener, virtualInbound on 15006 (what iptables
    // redirects inbound traffic to), with the Sidecar's ingress ports as
    // filter chains matching their destination port; outbound listeners
    // for the egress hosts' ports (HTTP ports on 0.0.0.0, a TCP service's
    // on its cluster IP) and virtualOutbound on 15001.
    let expected: BTreeSet<String> = [
        "0.0.0.0_80".to_string(),
        "0.0.0.0_9090".into(),
        format!("{listed_ip}_5432"),
        "virtualInbound".into(),
        "virtualOutbound".into(),
    ]
    .into();
    let listeners = vm
        .wait_listeners("the listeners the Sidecar shapes", |ls| {
            names(ls, |l| &l.name) == expected
        })
        .await;
    let inbound = listeners
        .iter()
        .find(|l| l.name == "virtualInbound")
        .expect("listed above");
    assert_eq!(listener_port(inbound), 15006);
    // Per port two chains, named `<the proxy's IP>_<port>`: Istio mutual
    // TLS (the `istio` ALPNs) and plain text (auto mTLS, PERMISSIVE by
    // default); both HTTP (http and grpc-admin by their names): Istio's
    // metadata exchange, then an HTTP connection manager.
    let http = [
        "istio.metadata_exchange",
        "envoy.filters.network.http_connection_manager",
    ];
    let mtls_alpn = [
        "istio",
        "istio-peer-exchange",
        "istio-http/1.0",
        "istio-http/1.1",
        "istio-h2",
    ];
    // (The blackhole chain matches 15006 itself: connections made to the
    // inbound listener directly.)
    let mut by_port: Vec<FilterChain> = filter_chains(inbound)
        .into_iter()
        .filter(|fc| fc.destination_port.is_some_and(|p| p != 15006))
        .collect();
    by_port.sort();
    let chain = |port: u32, transport: &str, alpn: &[&str]| FilterChain {
        name: format!("10.0.6.1_{port}"),
        destination_port: Some(port),
        transport_protocol: transport.to_string(),
        application_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        filters: http.iter().map(|s| s.to_string()).collect(),
        tcp_proxy_cluster: None,
    };
    assert_eq!(
        by_port,
        [
            chain(8080, "raw_buffer", &[]),
            chain(8080, "tls", &mtls_alpn),
            chain(9090, "raw_buffer", &[]),
            chain(9090, "tls", &mtls_alpn),
        ],
        "virtualInbound's chains by destination port"
    );

    // REGISTRY_ONLY: traffic to hosts outside the egress list ends in the
    // black hole, not in the passthrough cluster.
    let outbound = listeners
        .iter()
        .find(|l| l.name == "virtualOutbound")
        .expect("listed above");
    let catchall: Vec<Option<String>> = filter_chains(outbound)
        .into_iter()
        .filter(|fc| fc.name == "virtualOutbound-catchall-tcp")
        .map(|fc| fc.tcp_proxy_cluster)
        .collect();
    assert_eq!(catchall, [Some("BlackHoleCluster".to_string())]);
}

#[tokio::test]
async fn a_label_change_moves_the_endpoints_from_one_subset_to_the_other() {
    let istiod = Istiod::shared().await;
    let h = Harness::start(sim(&[
        ("i-01", [10, 0, 7, 1], "us-east-1a"),
        ("i-02", [10, 0, 7, 2], "us-east-1b"),
    ]))
    .await;
    let ns = unique_ns(&h, "subsets");
    h.create_namespace(&ns).await;
    let workload = |version: &str| {
        format!(
            "  workloads:
    - name: api
      labels: {{app: api, version: {version}}}
      ports: {{http: 8080}}
      serviceAccount: api-sa
      service: {{kind: ServiceEntry, ports: {{http: {{number: 80}}}}}}
"
        )
    };
    h.create_mirror(&mirror_yaml(&ns, "web", &workload("v1")))
        .await;
    let host = format!("api.{ns}.svc.cluster.local");
    // Subsets v1 and v2 of the ServiceEntry's host, by the version label.
    let rules: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        h.client.clone(),
        &ns,
        &kube::api::ApiResource {
            group: "networking.istio.io".into(),
            version: "v1".into(),
            api_version: "networking.istio.io/v1".into(),
            kind: "DestinationRule".into(),
            plural: "destinationrules".into(),
        },
    );
    let rule: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "api-versions"},
        "spec": {
            "host": host,
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }))
    .unwrap();
    rules
        .create(&Default::default(), &rule)
        .await
        .expect("DestinationRule created");
    let v1 = &format!("outbound|80|v1|{host}");
    let v2 = &format!("outbound|80|v2|{host}");
    let all = &format!("outbound|80||{host}");
    let both = [
        ep("10.0.7.1", 8080, "us-east-1a", 1, "UNKNOWN"),
        ep("10.0.7.2", 8080, "us-east-1b", 1, "UNKNOWN"),
    ];

    let pod = pod_client(&h, &istiod).await;
    pod.wait_endpoints(v1, "both VMs in subset v1", exactly(&both))
        .await;
    pod.wait_endpoints(v2, "subset v2 empty", exactly(&[]))
        .await;

    // The workload's version label changes in the spec: meshmirror
    // relabels the entries (and the ServiceEntry's selector follows).
    let patch = serde_json::json!({"spec": serde_yaml::from_str::<serde_json::Value>(
        &workload("v2"),
    )
    .unwrap()});
    h.mirrors(&ns)
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("mirror patched");
    pod.wait_endpoints(v2, "both VMs moved to subset v2", exactly(&both))
        .await;
    pod.wait_endpoints(v1, "subset v1 empty", exactly(&[]))
        .await;
    pod.wait_endpoints(
        all,
        "both VMs in the whole service throughout",
        exactly(&both),
    )
    .await;
}
