use serde_json::json;

use super::*;
use crate::core::desired::resolve_workloads;

fn spec(yaml: &str) -> ScalingGroupMirrorSpec {
    serde_yaml::from_str(&format!("provider: {{sim: {{group: g}}}}\n{yaml}")).unwrap()
}

fn objects(yaml: &str) -> Result<Vec<MeshObject>, SpecError> {
    let spec = spec(yaml);
    let workloads = resolve_workloads(&spec, &BTreeMap::new());
    desired(
        MeshMirror {
            name: "web",
            namespace: "team-a",
            spec: &spec,
        },
        &workloads,
    )
}

const TWO_APPS: &str = "workloads:
- name: api
  labels: {app: api}
  ports: {http: 8080, grpc-admin: 9000}
  service: {kind: ServiceEntry, ports: {http: {number: 80}}}
- name: exporter
  labels: {app: exporter}
  ports: {metrics: 9100}
  service: {kind: Service, ports: {metrics: {protocol: HTTP}}}
sidecar:
  workloadSelector: {vm: web}
  outboundTrafficPolicy: REGISTRY_ONLY
";

#[test]
fn a_two_application_group_gets_its_services_and_one_sidecar() {
    let got = objects(TWO_APPS).unwrap();
    let names: Vec<(MeshKind, &str)> = got.iter().map(|o| (o.kind, o.name.as_str())).collect();
    assert_eq!(
        names,
        [
            (MeshKind::Service, "exporter"),
            (MeshKind::ServiceEntry, "api"),
            (MeshKind::Sidecar, "web"),
        ]
    );
    assert_eq!(
        got[0].spec,
        json!({
            "selector": {"app": "exporter"},
            "ports": [{"name": "metrics", "port": 9100, "targetPort": 9100,
                       "protocol": "TCP", "appProtocol": "http"}],
        })
    );
    assert_eq!(
        got[1].spec,
        json!({
            "hosts": ["api.team-a.svc.cluster.local"],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [
                {"name": "grpc-admin", "number": 9000, "targetPort": 9000, "protocol": "GRPC"},
                {"name": "http", "number": 80, "targetPort": 8080, "protocol": "HTTP"},
            ],
            "workloadSelector": {"labels": {"app": "api"}},
        })
    );
    assert_eq!(
        got[2].spec,
        json!({
            "workloadSelector": {"labels": {"vm": "web"}},
            "ingress": [
                {"port": {"number": 8080, "name": "http", "protocol": "HTTP"},
                 "defaultEndpoint": "127.0.0.1:8080"},
                {"port": {"number": 9000, "name": "grpc-admin", "protocol": "GRPC"},
                 "defaultEndpoint": "127.0.0.1:9000"},
                {"port": {"number": 9100, "name": "metrics", "protocol": "HTTP"},
                 "defaultEndpoint": "127.0.0.1:9100"},
            ],
            "egress": [{"hosts": ["./*", "istio-system/*"]}],
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        })
    );
    for o in &got {
        assert_eq!(o.labels[keys::MANAGED_BY], "meshmirror");
        assert_eq!(o.labels[keys::MIRROR], "web");
        assert_eq!(o.hash.len(), 16);
    }
    assert_eq!(got[1].labels[keys::WORKLOAD], "api");
    assert!(!got[2].labels.contains_key(keys::WORKLOAD));
}

#[test]
fn hashes_are_stable_and_follow_the_content() {
    let a = objects(TWO_APPS).unwrap();
    assert_eq!(a, objects(TWO_APPS).unwrap());
    let b = objects(&TWO_APPS.replace("number: 80", "number: 81")).unwrap();
    assert_ne!(a[1].hash, b[1].hash);
    assert_eq!(
        (a[0].hash.as_str(), a[2].hash.as_str()),
        (b[0].hash.as_str(), b[2].hash.as_str())
    );
}

#[test]
fn resolved_checks_refuse_clashing_selectors_and_ports() {
    let cases = [
        (
            "workloads:\n- {name: a, labels: {app: api}, ports: {http: 80}, service: {kind: Service}}\n- {name: b, labels: {app: api, tier: x}, ports: {http: 81}}",
            "spec.workloads[0].labels",
        ),
        (
            "workloads:\n- {name: a, labels: {app: a}, service: {kind: Service}}",
            "spec.workloads[0].ports",
        ),
        (
            "workloads:\n- {name: a, labels: {app: a}, ports: {http: 80}}\n- {name: b, labels: {app: b}, ports: {web: 80}}\nsidecar: {workloadSelector: {vm: x}}",
            "spec.workloads[1].ports.web",
        ),
    ];
    for (yaml, field) in cases {
        assert_eq!(objects(yaml).unwrap_err().field, field, "{yaml}");
    }
    // Without a Sidecar, two workloads may share a port.
    objects("workloads:\n- {name: a, labels: {app: a}, ports: {http: 80}}\n- {name: b, labels: {app: b}, ports: {web: 80}}").unwrap();
}

#[test]
fn workload_group_labels_and_ports_make_the_selector() {
    let spec = spec("workloads: [{name: a, workloadGroup: reviews, service: {kind: Service}}]");
    let group = crate::workloadentry::GroupTemplate::from_spec(&json!({
        "metadata": {"labels": {"app": "reviews"}},
        "template": {"ports": {"http": 9080}},
    }))
    .unwrap();
    let groups = BTreeMap::from([("reviews".to_string(), group)]);
    let workloads = resolve_workloads(&spec, &groups);
    let got = desired(
        MeshMirror {
            name: "web",
            namespace: "team-a",
            spec: &spec,
        },
        &workloads,
    )
    .unwrap();
    assert_eq!(got[0].spec["selector"], json!({"app": "reviews"}));
    assert_eq!(got[0].spec["ports"][0]["targetPort"], 9080);
}

/// (owned objects, kinds listed, (creates, updates, deleted names))
type PlanCase<'a> = (Vec<ActualMesh>, MeshKinds, (usize, usize, Vec<&'a str>));

fn actual(kind: MeshKind, name: &str, hash: &str) -> ActualMesh {
    ActualMesh {
        kind,
        name: name.into(),
        uid: format!("uid-{name}"),
        hash: Some(hash.into()),
    }
}

#[test]
fn the_plan_creates_updates_and_deletes_only_what_differs() {
    let want = objects(TWO_APPS).unwrap();
    let (exporter, api, sidecar) = (&want[0], &want[1], &want[2]);
    let cases: Vec<PlanCase<'_>> = vec![
        // Nothing yet: three creates.
        (vec![], MeshKinds::ALL, (3, 0, vec![])),
        // Steady state: nothing.
        (
            vec![
                actual(MeshKind::Service, "exporter", &exporter.hash),
                actual(MeshKind::ServiceEntry, "api", &api.hash),
                actual(MeshKind::Sidecar, "web", &sidecar.hash),
            ],
            MeshKinds::ALL,
            (0, 0, vec![]),
        ),
        // A changed one is updated; one no longer wanted is deleted.
        (
            vec![
                actual(MeshKind::Service, "exporter", "old"),
                actual(MeshKind::ServiceEntry, "api", &api.hash),
                actual(MeshKind::Sidecar, "web", &sidecar.hash),
                actual(MeshKind::Service, "api", "x"),
            ],
            MeshKinds::ALL,
            (0, 1, vec!["api"]),
        ),
        // A kind that could not be listed is neither created nor deleted.
        (
            vec![actual(MeshKind::ServiceEntry, "gone", "x")],
            MeshKinds::default().with(MeshKind::Service),
            (1, 0, vec![]),
        ),
    ];
    for (i, (actual, listed, (creates, updates, deletes))) in cases.into_iter().enumerate() {
        let w = plan(want.clone(), &actual, listed);
        let deleted: Vec<&str> = w.deletes.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            (w.creates.len(), w.updates.len(), deleted),
            (creates, updates, deletes),
            "case {i}"
        );
    }
}

#[test]
fn wanted_kinds_follow_the_options() {
    assert!(wanted_kinds(&spec("workloads: [{name: a}]")).is_empty());
    let all = wanted_kinds(&spec(TWO_APPS));
    assert_eq!(all, MeshKinds::ALL);
    let kinds: Vec<MeshKind> = all.iter().collect();
    assert_eq!(kinds, MeshKind::ALL);
}
