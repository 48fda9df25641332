//! The mesh objects a mirror owns beside its entries (a Service or
//! ServiceEntry per workload, one Sidecar), through the controller's passes
//! on the test kit's API server or the real control plane.

mod common;

use std::collections::BTreeMap;

use common::{Harness, condition, mirror_yaml, sim_with};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use meshmirror::controller::pass::Reconciler;
use meshmirror::controller::pass::writes::WriteOutcome;
use meshmirror::core::mesh::MeshKind;
use meshmirror_testkit::apiserver::Verb;

/// Two applications on one VM group: the api behind a ServiceEntry (service
/// port 80 to the VMs' 8080), the exporter behind a Service, one Sidecar.
const TWO_APPS: &str = "  workloads:
    - name: api
      labels: {app: api}
      ports: {http: 8080}
      service: {kind: ServiceEntry, ports: {http: {number: 80}}}
    - name: exporter
      labels: {app: exporter}
      ports: {http-metrics: 9100}
      service: {kind: Service}
  sidecar:
    workloadSelector: {app: web-vm}
    outboundTrafficPolicy: REGISTRY_ONLY
";

fn api(h: &Harness, kind: MeshKind, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        h.client.clone(),
        ns,
        &meshmirror::cluster::mesh::resource(kind),
    )
}

async fn get(h: &Harness, kind: MeshKind, name: &str) -> Option<DynamicObject> {
    api(h, kind, "default").get_opt(name).await.expect("read")
}

async fn pass(h: &Harness) -> meshmirror::controller::pass::PassReport {
    pass_with(h, &h.reconciler()).await
}

/// A pass of a reconciler that remembers the mirror's earlier passes.
async fn pass_with(
    h: &Harness,
    reconciler: &Reconciler,
) -> meshmirror::controller::pass::PassReport {
    let mirror = h.mirrors("default").get("web").await.unwrap();
    reconciler.pass(&mirror).await
}

/// The reasons of the Events in `default`.
async fn event_reasons(h: &Harness) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(h.client.clone(), "default");
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

fn outcomes(report: &meshmirror::controller::pass::PassReport) -> Vec<(String, WriteOutcome)> {
    report
        .mesh
        .iter()
        .map(|r| (format!("{} {}", r.op.as_str(), r.object()), r.outcome))
        .collect()
}

#[tokio::test]
async fn options_create_the_objects_then_steady_state_writes_nothing() {
    let h = Harness::without_controller(sim_with(2)).await;
    let mirror = h
        .create_mirror(&mirror_yaml("default", "web", TWO_APPS))
        .await;
    let first = pass(&h).await;
    assert!(first.ok(), "{first:?}");
    assert_eq!(
        outcomes(&first),
        [
            ("create Service exporter".to_string(), WriteOutcome::Done),
            ("create ServiceEntry api".to_string(), WriteOutcome::Done),
            ("create Sidecar web".to_string(), WriteOutcome::Done),
        ]
    );
    assert_eq!(first.created, 4, "and the entries");

    let entry = get(&h, MeshKind::ServiceEntry, "api")
        .await
        .expect("ServiceEntry");
    assert_eq!(
        entry.data["spec"]["hosts"],
        serde_json::json!(["api.default.svc.cluster.local"])
    );
    assert_eq!(
        entry.data["spec"]["workloadSelector"]["labels"]["app"],
        "api"
    );
    assert_eq!(entry.data["spec"]["ports"][0]["number"], 80);
    assert_eq!(entry.data["spec"]["ports"][0]["targetPort"], 8080);
    let owners = entry.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(Some(owners[0].uid.clone()), mirror.metadata.uid);

    let service = get(&h, MeshKind::Service, "exporter")
        .await
        .expect("Service");
    assert_eq!(service.data["spec"]["selector"]["app"], "exporter");
    assert_eq!(service.data["spec"]["ports"][0]["port"], 9100);
    assert!(
        service.data["spec"]["clusterIP"].is_string(),
        "the server allocated an address: {:?}",
        service.data["spec"]
    );
    let sidecar = get(&h, MeshKind::Sidecar, "web").await.expect("Sidecar");
    assert_eq!(
        sidecar.data["spec"]["ingress"][1]["defaultEndpoint"],
        "127.0.0.1:9100"
    );
    assert_eq!(
        sidecar.data["spec"]["outboundTrafficPolicy"]["mode"],
        "REGISTRY_ONLY"
    );
    let status = h.status("default", "web").await;
    let mesh = condition(&status, "MeshObjects").expect("a MeshObjects condition");
    assert_eq!(
        (mesh.status.as_str(), mesh.reason.as_str()),
        ("True", "Applied")
    );
    let reasons = event_reasons(&h).await;
    assert!(
        reasons.iter().any(|r| r == "MeshObjectsSynced"),
        "{reasons:?}"
    );

    let before = h.server.requests();
    for _ in 0..5 {
        let report = pass(&h).await;
        assert!(report.ok(), "{report:?}");
        assert!(report.mesh.is_empty(), "{report:?}");
    }
    let during = h.server.requests().since(&before);
    assert_eq!(
        during.writes(),
        0,
        "steady state wrote: {:?}",
        during.entries()
    );
    assert_eq!(
        during.get(Verb::List, "services"),
        5,
        "one list per pass of each kind the spec wants"
    );
}

#[tokio::test]
async fn changes_update_in_place_and_turned_off_options_delete_their_objects() {
    let h = Harness::without_controller(sim_with(1)).await;
    h.create_mirror(&mirror_yaml("default", "web", TWO_APPS))
        .await;
    assert!(pass(&h).await.ok());
    let uid = |o: Option<DynamicObject>| o.and_then(|o| o.metadata.uid);
    let entry_uid = uid(get(&h, MeshKind::ServiceEntry, "api").await);

    let changed = TWO_APPS.replace("number: 80", "number: 8000");
    let spec: serde_yaml::Value =
        serde_yaml::from_str(&mirror_yaml("default", "web", &changed)).unwrap();
    h.mirrors("default")
        .patch("web", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    let report = pass(&h).await;
    assert_eq!(
        outcomes(&report),
        [("update ServiceEntry api".to_string(), WriteOutcome::Done)]
    );
    let entry = get(&h, MeshKind::ServiceEntry, "api").await.unwrap();
    assert_eq!(entry.data["spec"]["ports"][0]["number"], 8000);
    assert_eq!(entry.metadata.uid, entry_uid, "updated in place");

    // Turning every option off deletes the three objects; the entries stay.
    let off = serde_json::json!({"spec": {"sidecar": null, "workloads": [
        {"name": "api", "labels": {"app": "api"}, "ports": {"http": 8080}},
        {"name": "exporter", "labels": {"app": "exporter"}, "ports": {"http-metrics": 9100}},
    ]}});
    h.mirrors("default")
        .patch("web", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    let report = pass(&h).await;
    assert!(report.ok(), "{report:?}");
    let mut deleted = outcomes(&report);
    deleted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        deleted,
        [
            ("delete Service exporter".to_string(), WriteOutcome::Done),
            ("delete ServiceEntry api".to_string(), WriteOutcome::Done),
            ("delete Sidecar web".to_string(), WriteOutcome::Done),
        ]
    );
    for (kind, name) in [
        (MeshKind::Service, "exporter"),
        (MeshKind::ServiceEntry, "api"),
        (MeshKind::Sidecar, "web"),
    ] {
        let left = get(&h, kind, name).await;
        let deleting = left
            .as_ref()
            .is_some_and(|o| o.metadata.deletion_timestamp.is_some());
        assert!(left.is_none() || deleting, "{kind:?} {name} still there");
    }
    assert_eq!(h.entries("default").await.len(), 2);
    let status = h.status("default", "web").await;
    assert!(condition(&status, "MeshObjects").is_none(), "{status:?}");

    // Once a pass knows the mirror owns none, later passes list nothing.
    let reconciler = h.reconciler();
    assert!(pass_with(&h, &reconciler).await.mesh.is_empty());
    let before = h.server.requests();
    assert!(pass_with(&h, &reconciler).await.mesh.is_empty());
    let during = h.server.requests().since(&before);
    for resource in ["services", "serviceentries", "sidecars"] {
        assert_eq!(during.get(Verb::List, resource), 0, "{resource}");
    }
}

#[tokio::test]
async fn a_same_named_object_that_is_not_the_mirrors_is_left_alone_and_reported() {
    let h = Harness::without_controller(sim_with(1)).await;
    // Another team's Service named like the exporter's.
    let theirs: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "exporter", "labels": {"team": "other"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap();
    let theirs = api(&h, MeshKind::Service, "default")
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    h.create_mirror(&mirror_yaml("default", "web", TWO_APPS))
        .await;
    let report = pass(&h).await;
    assert!(
        outcomes(&report).contains(&(
            "create Service exporter".to_string(),
            WriteOutcome::NameTaken
        )),
        "{report:?}"
    );
    assert_eq!(report.created, 2, "the entries are written all the same");
    let after = get(&h, MeshKind::Service, "exporter").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        theirs.metadata.resource_version
    );
    assert_eq!(after.data["spec"]["selector"]["app"], "theirs");
    let status = h.status("default", "web").await;
    let mesh = condition(&status, "MeshObjects").expect("condition");
    assert_eq!(
        (mesh.status.as_str(), mesh.reason.as_str()),
        ("False", "NameTaken")
    );
    assert!(
        mesh.message.contains("Service exporter"),
        "{}",
        mesh.message
    );
    assert!(
        get(&h, MeshKind::ServiceEntry, "api").await.is_some(),
        "the others are written"
    );
    let reasons = event_reasons(&h).await;
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "MeshObjectNameTaken")
            .count(),
        1,
        "{reasons:?}"
    );

    // Looked at again on the next pass: still not touched, no second Event.
    let before = h.server.requests();
    let again = pass(&h).await;
    assert_eq!(again.mesh.len(), 1);
    let during = h.server.requests().since(&before);
    assert_eq!(
        during.get(Verb::Create, "services"),
        0,
        "a GET finds it first"
    );
    assert_eq!(during.get(Verb::Patch, "services"), 0);
}

#[tokio::test]
async fn deleting_the_mirror_collects_its_mesh_objects() {
    let h = Harness::without_controller(sim_with(1)).await;
    h.create_mirror(&mirror_yaml("default", "web", TWO_APPS))
        .await;
    assert!(pass(&h).await.ok());
    h.mirrors("default")
        .delete("web", &Default::default())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let mut left = BTreeMap::new();
        for (kind, name) in [
            (MeshKind::Service, "exporter"),
            (MeshKind::ServiceEntry, "api"),
            (MeshKind::Sidecar, "web"),
        ] {
            if get(&h, kind, name).await.is_some() {
                left.insert(kind.kind(), name);
            }
        }
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < common::CONVERGE,
            "garbage collection left {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_network_without_a_gateway_is_reported_and_its_entries_written_all_the_same() {
    let h = Harness::without_controller(sim_with(2)).await;
    h.create_namespace("istio-system").await;
    let yaml = mirror_yaml(
        "default",
        "web",
        "  network: vm-net\n  workloads: [{name: api, labels: {app: api}, ports: {http: 8080}}]\n",
    );
    h.create_mirror(&yaml).await;
    let report = pass(&h).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.created, 2, "entries are written without a gateway");
    let status = h.status("default", "web").await;
    let reachable = condition(&status, "NetworksReachable").expect("condition");
    assert_eq!(
        (reachable.status.as_str(), reachable.reason.as_str()),
        ("False", "NetworkWithoutGateway")
    );
    assert!(
        reachable.message.contains("\"vm-net\""),
        "{}",
        reachable.message
    );
    let reasons = event_reasons(&h).await;
    assert!(
        reasons.iter().any(|r| r == "NetworkWithoutGateway"),
        "{reasons:?}"
    );

    // An east-west gateway for the network appears.
    let gateway: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-eastwestgateway",
                     "labels": {"topology.istio.io/network": "vm-net"}},
        "spec": {"selector": {"istio": "eastwestgateway"},
                 "ports": [{"name": "tls", "port": 15443}]},
    }))
    .unwrap();
    api(&h, MeshKind::Service, "istio-system")
        .create(&PostParams::default(), &gateway)
        .await
        .unwrap();
    // A new reconciler: the network view is kept for 30 s per process.
    let report = pass(&h).await;
    assert!(report.ok(), "{report:?}");
    let status = h.status("default", "web").await;
    let reachable = condition(&status, "NetworksReachable").expect("condition");
    assert_eq!(
        (reachable.status.as_str(), reachable.reason.as_str()),
        ("True", "Reachable")
    );
}

#[tokio::test]
async fn a_mirror_on_no_network_asks_nothing_about_gateways() {
    let h = Harness::without_controller(sim_with(1)).await;
    h.create_mirror(&mirror_yaml("default", "web", common::TWO_WORKLOADS))
        .await;
    let reconciler = h.reconciler();
    assert!(pass_with(&h, &reconciler).await.ok());
    let before = h.server.requests();
    assert!(pass_with(&h, &reconciler).await.ok());
    let during = h.server.requests().since(&before);
    assert_eq!(during.get(Verb::List, "services"), 0);
    assert_eq!(during.get(Verb::Get, "namespaces"), 0);
    let status = h.status("default", "web").await;
    assert!(condition(&status, "NetworksReachable").is_none());
}

#[tokio::test]
async fn render_mesh_networks_gathers_the_mirrors_networks_and_the_gateways() {
    let h = Harness::without_controller(sim_with(1)).await;
    h.create_namespace("istio-system").await;
    h.create_namespace("team-b").await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  networkByCidr: [{cidr: 10.1.0.0/16, network: vm-net}]\n  workloads: [{name: a}]\n",
    ))
    .await;
    h.create_mirror(&mirror_yaml(
        "team-b",
        "batch",
        "  networkByCidr: [{cidr: 10.2.0.0/16, network: vm-net}, {cidr: 10.9.0.0/16, network: dc}]\n  workloads: [{name: a}]\n",
    ))
    .await;
    let gateway: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "eastwest", "labels": {
            "topology.istio.io/network": "vm-net", "networking.istio.io/gatewayPort": "15444"}},
        "spec": {"selector": {"istio": "eastwestgateway"}, "ports": [{"name": "tls", "port": 15444}]},
    }))
    .unwrap();
    api(&h, MeshKind::Service, "istio-system")
        .create(&PostParams::default(), &gateway)
        .await
        .unwrap();
    let yaml =
        meshmirror::app::mesh_networks(Some(h.client.clone()), &[], "istio-system", "Kubernetes")
            .await
            .unwrap();
    let got: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(
        got["networks"]["vm-net"]["endpoints"],
        serde_json::json!([{"fromCidr": "10.1.0.0/16"}, {"fromCidr": "10.2.0.0/16"}]),
        "{yaml}"
    );
    assert_eq!(
        got["networks"]["vm-net"]["gateways"][0]["port"], 15444,
        "{yaml}"
    );
    let gateway_host = got["networks"]["vm-net"]["gateways"][0]["registryServiceName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(gateway_host.starts_with("eastwest."), "{yaml}");
    assert_eq!(
        got["networks"]["dc"]["endpoints"],
        serde_json::json!([{"fromCidr": "10.9.0.0/16"}])
    );
}

#[tokio::test]
async fn render_prints_the_mesh_objects_the_controller_writes() {
    let sim_yaml = "groups:\n  web:\n    region: us-east-1\n    instances:\n      - {id: i-01, privateIPv4: 10.0.1.1, zone: us-east-1a}\n";
    let h =
        Harness::without_controller(meshmirror_sim::SimCloud::from_yaml(sim_yaml).unwrap()).await;
    let yaml = mirror_yaml("default", "web", TWO_APPS);
    h.create_mirror(&yaml).await;
    assert!(pass(&h).await.ok());

    let dir = std::env::temp_dir().join(format!("meshmirror-mesh-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mirror_file, sim_file) = (dir.join("mirror.yaml"), dir.join("sim.yaml"));
    std::fs::write(&mirror_file, &yaml).unwrap();
    std::fs::write(&sim_file, sim_yaml).unwrap();
    let rendered = meshmirror::app::render(
        &mirror_file,
        Some(&sim_file),
        &[],
        meshmirror::workloadentry::EntryVersion::V1,
        &Default::default(),
    )
    .await
    .unwrap();
    let docs: Vec<serde_json::Value> = rendered
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    let mut compared = 0;
    for doc in docs.iter().filter(|d| d["kind"] != "WorkloadEntry") {
        let kind = match doc["kind"].as_str() {
            Some("Service") => MeshKind::Service,
            Some("ServiceEntry") => MeshKind::ServiceEntry,
            _ => MeshKind::Sidecar,
        };
        let name = doc["metadata"]["name"].as_str().unwrap();
        let written = get(&h, kind, name).await.expect("written by the pass");
        let hash = |m: &serde_json::Value| m["annotations"]["meshmirror.io/applied-hash"].clone();
        let meta = serde_json::to_value(&written.metadata).unwrap();
        assert_eq!(hash(&doc["metadata"]), hash(&meta), "{kind:?} {name}");
        assert_eq!(doc["metadata"]["labels"], meta["labels"], "{kind:?} {name}");
        // The server adds defaults (a Service's clusterIP, type...); every
        // field render prints is there with the same value.
        for (field, value) in doc["spec"].as_object().unwrap() {
            assert_eq!(
                &written.data["spec"][field], value,
                "{kind:?} {name} spec.{field}"
            );
        }
        compared += 1;
    }
    assert_eq!(compared, 3, "{rendered}");
}

/// Every shape of object the options can produce is accepted by the API
/// server (on the real backend: Istio's CRD schemas and CEL rules, and the
/// Service validation of kube-apiserver).
#[tokio::test]
async fn every_option_produces_objects_the_api_server_accepts() {
    let h = Harness::without_controller(sim_with(1)).await;
    let spec = "  workloads:
    - name: api
      labels: {app: api, tier: web}
      ports: {http: 8080, grpc-web: 8081, tcp-db: 5432, https-admin: 8443, tls: 9443, mongo: 27017}
      service:
        kind: ServiceEntry
        name: api-entry
        hosts: [api.default.svc.cluster.local, api-v2.default.svc.corp.internal]
        ports: {http: {number: 80}, grpc-web: {protocol: GRPC-Web}, tcp-db: {number: 15432}}
    - name: udp
      labels: {app: udp}
      ports: {dns: 5353, redis: 6379, mysql: 3306, http2: 8082}
      service: {kind: Service, ports: {dns: {protocol: UDP}, http2: {number: 82}}}
  sidecar:
    workloadSelector: {app: web-vm, tier: web}
    egressHosts: ['./*', 'istio-system/*', '*/api.example.com', '~/*', 'shared/*.example.com']
    outboundTrafficPolicy: ALLOW_ANY
";
    h.create_mirror(&mirror_yaml("default", "web", spec)).await;
    let report = pass(&h).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        outcomes(&report),
        [
            ("create Service udp".to_string(), WriteOutcome::Done),
            (
                "create ServiceEntry api-entry".to_string(),
                WriteOutcome::Done
            ),
            ("create Sidecar web".to_string(), WriteOutcome::Done),
        ]
    );
    let service = get(&h, MeshKind::Service, "udp").await.unwrap();
    let dns = service.data["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "dns")
        .cloned()
        .unwrap();
    assert_eq!(
        (dns["protocol"].as_str(), dns["appProtocol"].as_str()),
        (Some("UDP"), Some("udp"))
    );
    let sidecar = get(&h, MeshKind::Sidecar, "web").await.unwrap();
    assert_eq!(
        sidecar.data["spec"]["ingress"].as_array().unwrap().len(),
        10
    );
}
