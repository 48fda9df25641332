//! The validator against Istio's published CRDs and test cases.

use super::{FieldCause, Validator};
use serde::Deserialize;
use serde_json::{Value, json};

const WORKLOADENTRY_CRD: &str = include_str!("../../fixtures/schema/workloadentry-crd.yaml");
const WORKLOADGROUP_CRD: &str = include_str!("../../fixtures/schema/workloadgroup-crd.yaml");
const SERVICEENTRY_CRD: &str = include_str!("../../fixtures/schema/serviceentry-crd.yaml");
const WORKLOADENTRY_INVALID: &str =
    include_str!("../../fixtures/schema/workloadentry-invalid.yaml");
const WORKLOADENTRY_VALID: &str = include_str!("../../fixtures/schema/workloadentry-valid.yaml");

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("fixture parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every served version's validator, by version name.
fn validators(crd_yaml: &str) -> Vec<(String, Validator)> {
    let crd = documents(crd_yaml).remove(0);
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_owned();
            let schema = &v["schema"]["openAPIV3Schema"];
            let validator = Validator::new(schema)
                .unwrap_or_else(|e| panic!("{name}: schema must compile: {e}"));
            (name, validator)
        })
        .collect()
}

fn version(crd_yaml: &str, wanted: &str) -> Validator {
    validators(crd_yaml)
        .into_iter()
        .find(|(name, _)| name == wanted)
        .map(|(_, v)| v)
        .expect("version served")
}

/// A write as the server handles it: prune, default, validate.
fn write(validator: &Validator, mut obj: Value) -> Vec<FieldCause> {
    validator.prune(&mut obj);
    validator.apply_defaults(&mut obj);
    validator.validate(&obj)
}

fn rendered(causes: &[FieldCause]) -> Vec<String> {
    causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

#[test]
fn every_version_of_the_istio_crds_compiles_with_all_rules() {
    for crd in [WORKLOADENTRY_CRD, WORKLOADGROUP_CRD, SERVICEENTRY_CRD] {
        let versions = validators(crd);
        assert_eq!(versions.len(), 3, "v1, v1alpha3, v1beta1");
        for (name, v) in &versions {
            assert!(v.root.has_rules, "{name}: rules were compiled");
        }
    }
}

#[test]
fn istio_invalid_workloadentries_are_rejected_with_their_message() {
    let cases = documents(WORKLOADENTRY_INVALID);
    assert_eq!(cases.len(), 7);
    for mut case in cases {
        let expected = case
            .as_object_mut()
            .unwrap()
            .remove("_err")
            .and_then(|e| e.as_str().map(str::to_owned))
            .expect("_err");
        let apiversion = case["apiVersion"].as_str().unwrap();
        let validator = version(WORKLOADENTRY_CRD, apiversion.rsplit('/').next().unwrap());
        let name = case["metadata"]["name"].clone();
        let causes = rendered(&write(&validator, case));
        assert!(
            causes.iter().any(|c| c.contains(&expected)),
            "{name}: want {expected:?} in {causes:?}"
        );
    }
}

#[test]
fn istio_invalid_workloadentries_get_the_real_servers_causes() {
    let validator = version(WORKLOADENTRY_CRD, "v1alpha3");
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({}),
            vec![
                "spec: Required value",
                "<nil>: Invalid value: null: some validation rules were not checked because the object \
             was invalid; correct the existing errors to complete validation",
            ],
        ),
        (
            json!({"spec": {}}),
            vec!["spec: Invalid value: \"object\": Address is required"],
        ),
        (
            json!({"spec": {"address": "1.1.1.1", "ports": {"http": 99999}}}),
            vec!["spec.ports[http]: Invalid value: \"integer\": port must be between 1-65535"],
        ),
        (
            json!({"spec": {"address": "1.1.1.1", "ports": {"@": 80}}}),
            vec!["spec.ports: Invalid value: \"object\": port name must be valid"],
        ),
        (
            json!({"spec": {"address": "unix://@foo", "ports": {"http": 80}}}),
            vec!["spec: Invalid value: \"object\": UDS may not include ports"],
        ),
        (
            json!({"spec": {"address": "unix://"}}),
            vec![
                "spec.address: Invalid value: \"string\": index out of range: 8 evaluating rule: \
             UDS must be an absolute path or abstract socket",
                "spec.address: Invalid value: \"string\": UDS may not be a dir",
            ],
        ),
    ];
    for (spec, want) in cases {
        let mut obj = json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "WorkloadEntry",
            "metadata": {"name": "x"}});
        obj.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        assert_eq!(rendered(&write(&validator, obj)), want, "{spec}");
    }
}

#[test]
fn istio_valid_workloadentries_are_accepted() {
    let cases = documents(WORKLOADENTRY_VALID);
    assert_eq!(cases.len(), 5);
    for case in cases {
        let apiversion = case["apiVersion"].as_str().unwrap();
        let validator = version(WORKLOADENTRY_CRD, apiversion.rsplit('/').next().unwrap());
        let name = case["metadata"]["name"].clone();
        let causes = write(&validator, case);
        assert!(causes.is_empty(), "{name}: {causes:?}");
    }
}

/// An entry as meshmirror writes one.
fn entry(spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": "web-i-0123456789abcdef0", "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "meshmirror"}},
        "spec": spec,
    })
}

fn typical_spec() -> Value {
    json!({
        "address": "10.0.12.34",
        "ports": {"http": 8080, "grpc-api": 9090},
        "labels": {"app": "web", "version": "v1", "topology.kubernetes.io/zone": "eu-west-1a"},
        "network": "vpc-0abc",
        "locality": "eu-west-1/eu-west-1a",
        "weight": 1,
        "serviceAccount": "web",
    })
}

#[test]
fn realistic_workloadentries_are_checked_field_by_field() {
    for v in ["v1", "v1alpha3", "v1beta1"] {
        let validator = version(WORKLOADENTRY_CRD, v);
        assert!(write(&validator, entry(typical_spec())).is_empty(), "{v}");
    }
    let validator = version(WORKLOADENTRY_CRD, "v1");
    let with = |field: &str, value: Value| {
        let mut spec = typical_spec();
        spec[field] = value;
        rendered(&write(&validator, entry(spec)))
    };
    let many_labels: serde_json::Map<String, Value> =
        (0..257).map(|i| (format!("l{i}"), json!("v"))).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "address",
            json!("a".repeat(257)),
            "spec.address: Too long: may not be more than 256 bytes",
        ),
        (
            "address",
            json!(10),
            "spec.address: Invalid value: \"integer\": spec.address in body must be of type string: \"integer\"",
        ),
        (
            "address",
            json!("unix://relative"),
            "spec.address: Invalid value: \"string\": UDS must be an absolute path or abstract socket",
        ),
        (
            "address",
            json!("unix:///dir/"),
            "spec.address: Invalid value: \"string\": UDS may not be a dir",
        ),
        (
            "ports",
            json!({"http": 0}),
            "spec.ports[http]: Invalid value: \"integer\": port must be between 1-65535",
        ),
        (
            "ports",
            json!({"http": -1}),
            "spec.ports.http: Invalid value: -1: spec.ports.http in body should be greater than or equal to 0",
        ),
        (
            "ports",
            json!({"http": "80"}),
            "spec.ports.http: Invalid value: \"string\": spec.ports.http in body must be of type integer: \"string\"",
        ),
        (
            "ports",
            json!({"-http": 80}),
            "spec.ports: Invalid value: \"object\": port name must be valid",
        ),
        (
            "ports",
            json!({"p".repeat(63): 80}),
            "spec.ports: Invalid value: \"object\": port name must be valid",
        ),
        (
            "labels",
            Value::Object(many_labels),
            "spec.labels: Too many: 257: must have at most 256 items",
        ),
        (
            "labels",
            json!({"app": 1}),
            "spec.labels.app: Invalid value: \"integer\": spec.labels.app in body must be of type string: \"integer\"",
        ),
        (
            "network",
            json!("n".repeat(2049)),
            "spec.network: Too long: may not be more than 2048 bytes",
        ),
        (
            "locality",
            json!("l".repeat(2049)),
            "spec.locality: Too long: may not be more than 2048 bytes",
        ),
        (
            "weight",
            json!(4294967296u64),
            "spec.weight: Invalid value: 4294967296: spec.weight in body should be less than or equal to 4294967295",
        ),
        (
            "weight",
            json!(-2),
            "spec.weight: Invalid value: -2: spec.weight in body should be greater than or equal to 0",
        ),
        (
            "weight",
            json!(1.5),
            "spec.weight: Invalid value: \"number\": spec.weight in body must be of type integer: \"number\"",
        ),
        (
            "serviceAccount",
            json!("s".repeat(254)),
            "spec.serviceAccount: Too long: may not be more than 253 bytes",
        ),
    ];
    for (field, value, want) in cases {
        let got = with(field, value.clone());
        assert!(
            got.iter().any(|c| c == want),
            "{field}={value}: want {want:?} in {got:?}"
        );
    }
    // Unknown fields are pruned, not refused; metadata is left alone.
    let mut obj = entry(typical_spec());
    obj["spec"]["bogus"] = json!(true);
    obj["status"] =
        json!({"conditions": [{"type": "Healthy", "status": "True", "extra": 1}], "x": 1});
    validator.prune(&mut obj);
    assert!(obj["spec"].get("bogus").is_none());
    assert_eq!(
        obj["status"]["x"],
        json!(1),
        "status preserves unknown fields"
    );
    assert!(obj["status"]["conditions"][0].get("extra").is_none());
    assert_eq!(
        obj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "meshmirror"
    );
    assert!(validator.validate(&obj).is_empty());
}

#[test]
fn serviceentry_and_workloadgroup_rules_hold() {
    let se = version(SERVICEENTRY_CRD, "v1");
    let obj = |spec: Value| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "se"}, "spec": spec})
    };
    let cases: Vec<(Value, Option<&str>)> = vec![
        (
            json!({"hosts": ["a.example.com"], "ports": [{"name": "http", "number": 80}]}),
            None,
        ),
        (
            json!({"hosts": ["*"]}),
            Some("spec.hosts[0]: Invalid value: \"string\": hostname cannot be wildcard"),
        ),
        (
            json!({"hosts": []}),
            Some("spec.hosts: Invalid value: 0: spec.hosts in body should have at least 1 items"),
        ),
        (
            json!({"hosts": ["a"], "endpoints": [{"address": "1.1.1.1"}]}),
            Some("spec: Invalid value: \"object\": NONE mode cannot set endpoints"),
        ),
        (
            json!({"hosts": ["a"], "resolution": "DNS", "addresses": ["10.0.0.0/8"]}),
            Some(
                "spec: Invalid value: \"object\": CIDR addresses are allowed only for NONE/STATIC resolution types",
            ),
        ),
        (
            json!({"hosts": ["a"], "resolution": "DNS_ROUND_ROBIN", "endpoints": [{"address": "a"}, {"address": "b"}]}),
            Some(
                "spec: Invalid value: \"object\": DNS_ROUND_ROBIN mode cannot have multiple endpoints",
            ),
        ),
        (
            json!({"hosts": ["a"], "resolution": "BOGUS"}),
            Some(
                "spec.resolution: Unsupported value: \"BOGUS\": supported values: \"NONE\", \"STATIC\", \"DNS\", \"DNS_ROUND_ROBIN\", \"DYNAMIC_DNS\"",
            ),
        ),
        (
            json!({"hosts": ["a"], "ports": [{"name": "a", "number": 80}, {"name": "b", "number": 80}]}),
            Some("spec.ports: Invalid value: \"array\": port number cannot be duplicated"),
        ),
        (
            json!({"hosts": ["a"], "ports": [{"name": "a", "number": 80}, {"name": "a", "number": 81}]}),
            Some("spec.ports[1]: Duplicate value: {\"name\":\"a\"}"),
        ),
        (
            json!({"hosts": ["a"], "ports": [{"number": 80}]}),
            Some("spec.ports[0].name: Required value"),
        ),
        (
            json!({"hosts": ["a"], "workloadSelector": {"labels": {"app": "w*"}}}),
            Some(
                "spec.workloadSelector.labels[app]: Invalid value: \"string\": wildcard is not supported in selector",
            ),
        ),
    ];
    for (spec, want) in cases {
        let got = rendered(&write(&se, obj(spec.clone())));
        match want {
            None => assert!(got.is_empty(), "{spec}: {got:?}"),
            Some(want) => assert!(
                got.iter().any(|c| c == want),
                "{spec}: want {want:?} in {got:?}"
            ),
        }
    }

    let wg = version(WORKLOADGROUP_CRD, "v1");
    let group = |probe: Value| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadGroup",
        "metadata": {"name": "wg"}, "spec": {"template": {"address": "1.2.3.4"}, "probe": probe}})
    };
    assert!(write(&wg, group(json!({"httpGet": {"port": 8080}}))).is_empty());
    let got = rendered(&write(
        &wg,
        group(json!({"httpGet": {"port": 8080}, "tcpSocket": {"port": 80}})),
    ));
    assert_eq!(
        got,
        vec![
            "<nil>: Invalid value: \"\": \"spec.probe\" must validate one and only one schema (oneOf). \
              Found 2 valid alternatives"
        ]
    );
}

/// Throughput of the validator on a typical entry: run with
/// `cargo test --release -p meshmirror-testkit -- --ignored --nocapture validations_per_second`.
#[test]
#[ignore = "timing report, not a check"]
fn validations_per_second() {
    let validator = version(WORKLOADENTRY_CRD, "v1");
    let obj = entry(typical_spec());
    let n = 50_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let mut o = obj.clone();
        validator.prune(&mut o);
        validator.apply_defaults(&mut o);
        assert!(validator.validate(&o).is_empty());
    }
    let elapsed = start.elapsed();
    let per_sec = f64::from(n) / elapsed.as_secs_f64();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{n} WorkloadEntry writes (clone+prune+default+validate) in {elapsed:?}: {per_sec:.0}/s"
        );
    }
}
