//! Custom resources through `kube`: Istio's validation cases, versions, the
//! status subresource, server-side apply with the CRD's schema, and CRDs
//! loaded from YAML.

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use meshmirror_testkit::ApiServer;
use serde::Deserialize;
use serde_json::{Value, json};

fn api(
    server: &ApiServer,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    ns: &str,
) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(server.client(), ns, &ar)
}

fn entries(server: &ApiServer, version: &str) -> Api<DynamicObject> {
    api(
        server,
        "networking.istio.io",
        version,
        "WorkloadEntry",
        "workloadentries",
        "default",
    )
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

fn status_of(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn istio_workloadentry_cases_are_accepted_and_rejected_as_upstream() {
    let server = ApiServer::start().await.unwrap();
    let we = entries(&server, "v1alpha3");
    let valid = docs(include_str!("../fixtures/workloadentry-valid.yaml"));
    assert!(valid.len() >= 3);
    for case in valid {
        let name = case["metadata"]["name"].as_str().unwrap().to_string();
        we.create(&PostParams::default(), &obj(case))
            .await
            .unwrap_or_else(|e| panic!("valid case {name} rejected: {e:?}"));
    }
    let invalid = docs(include_str!("../fixtures/workloadentry-invalid.yaml"));
    assert!(invalid.len() >= 5);
    for mut case in invalid {
        let expected = case["_err"].as_str().unwrap().to_string();
        case.as_object_mut().unwrap().remove("_err");
        let name = case["metadata"]["name"].as_str().unwrap().to_string();
        let err = we
            .create(&PostParams::default(), &obj(case))
            .await
            .expect_err(&format!("invalid case {name} accepted"));
        let status = status_of(err);
        assert_eq!(
            (status.code, status.reason.as_str()),
            (422, "Invalid"),
            "{name}"
        );
        assert!(
            status.message.contains(&expected),
            "{name}: {:?} does not contain {expected:?}",
            status.message
        );
        assert!(
            status.message.starts_with(&format!(
                "WorkloadEntry.networking.istio.io \"{name}\" is invalid: "
            )),
            "{}",
            status.message
        );
        let details = status.details.expect("details");
        assert!(!details.causes.is_empty(), "{name}: causes");
        assert_eq!(details.kind, "WorkloadEntry");
    }
}

#[tokio::test]
async fn all_versions_served_and_stored_in_the_storage_version() {
    let server = ApiServer::start().await.unwrap();
    let v1a3 = entries(&server, "v1alpha3");
    let v1 = entries(&server, "v1");
    let created = v1a3
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "networking.istio.io/v1alpha3", "kind": "WorkloadEntry",
                "metadata": {"name": "a"}, "spec": {"address": "10.0.0.1", "unknownField": 1},
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        created.types.as_ref().unwrap().api_version,
        "networking.istio.io/v1alpha3"
    );
    assert!(created.data["spec"].get("unknownField").is_none(), "pruned");
    let read = v1.get("a").await.unwrap();
    assert_eq!(read.types.unwrap().api_version, "networking.istio.io/v1");
    assert_eq!(read.data["spec"]["address"], "10.0.0.1");
    let listed = v1a3.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items[0].types.as_ref().unwrap().api_version,
        "networking.istio.io/v1alpha3"
    );
    // Watch in another version than the one written.
    let mut w = v1
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.types.unwrap().api_version, "networking.istio.io/v1"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn status_subresource_splits_spec_and_status_writes() {
    let server = ApiServer::start().await.unwrap();
    let we = entries(&server, "v1");
    let created = we
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"name": "a"}, "spec": {"address": "10.0.0.1"},
                "status": {"observedGeneration": 5},
            })),
        )
        .await
        .unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );

    let with_status = we
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"address": "10.9.9.9"}, "status": {"observedGeneration": 1}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(with_status.data["status"]["observedGeneration"], 1);
    assert_eq!(
        with_status.data["spec"]["address"], "10.0.0.1",
        "status writes keep spec"
    );
    assert_eq!(with_status.metadata.generation, Some(1));

    let mut replaced = with_status.clone();
    replaced.data["spec"]["address"] = json!("10.0.0.2");
    replaced.data["status"] = json!({"observedGeneration": 99});
    let after = we
        .replace("a", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(after.data["spec"]["address"], "10.0.0.2");
    assert_eq!(
        after.data["status"]["observedGeneration"], 1,
        "main writes keep status"
    );
    assert_eq!(after.metadata.generation, Some(2));

    // Server-side apply of status by another manager: the merge patch's
    // manager owns the field, so only a forced apply takes it.
    let status_config = Patch::Apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
        "metadata": {"name": "a"}, "status": {"observedGeneration": 2},
    }));
    let conflict = we
        .patch_status("a", &PatchParams::apply("status-writer"), &status_config)
        .await
        .unwrap_err();
    assert_eq!(status_of(conflict).code, 409);
    let applied = we
        .patch_status(
            "a",
            &PatchParams::apply("status-writer").force(),
            &status_config,
        )
        .await
        .unwrap();
    assert_eq!(applied.data["status"]["observedGeneration"], 2);
    let mf = applied.metadata.managed_fields.unwrap();
    let entry = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("status-writer"))
        .expect("status-writer entry");
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
}

#[tokio::test]
async fn server_side_apply_on_workload_entries() {
    let server = ApiServer::start().await.unwrap();
    let we = entries(&server, "v1");
    let config = |addr: &str| {
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
            "metadata": {"name": "vm-1", "labels": {"app.kubernetes.io/managed-by": "meshmirror"}},
            "spec": {"address": addr, "labels": {"app": "web"}, "ports": {"http": 8080}},
        })
    };
    let pp = PatchParams::apply("meshmirror");
    let created = we
        .patch("vm-1", &pp, &Patch::Apply(config("10.0.0.1")))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let again = we
        .patch("vm-1", &pp, &Patch::Apply(config("10.0.0.1")))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version, created.metadata.resource_version,
        "no-op"
    );
    let err = we
        .patch(
            "vm-1",
            &PatchParams::apply("istiod"),
            &Patch::Apply(config("10.0.0.2")),
        )
        .await
        .unwrap_err();
    let status = status_of(err);
    assert_eq!(status.code, 409);
    let causes = status.details.unwrap().causes;
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".spec.address");
    // Invalid applied config: 422 and nothing stored.
    let mut bad = config("10.0.0.1");
    bad["spec"]["ports"]["http"] = json!(99999);
    let status = status_of(we.patch("vm-1", &pp, &Patch::Apply(bad)).await.unwrap_err());
    assert_eq!(status.code, 422);
    let live = we.get("vm-1").await.unwrap();
    assert_eq!(
        live.metadata.resource_version,
        created.metadata.resource_version
    );
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  scope: Cluster
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

#[tokio::test]
async fn crds_from_yaml_cluster_scoped_with_per_version_schemas() {
    let server = ApiServer::builder()
        .crd_yaml(WIDGET_CRD)
        .start()
        .await
        .unwrap();
    let ar = |v: &str| ApiResource {
        group: "example.com".into(),
        version: v.into(),
        api_version: format!("example.com/{v}"),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let v1: Api<DynamicObject> = Api::all_with(server.client(), &ar("v1"));
    let beta: Api<DynamicObject> = Api::all_with(server.client(), &ar("v1beta1"));
    let w = |v: &str, spec: Value| {
        obj(
            json!({"apiVersion": format!("example.com/{v}"), "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}),
        )
    };
    let status = status_of(
        v1.create(&PostParams::default(), &w("v1", json!({"size": 0})))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 422);
    assert!(status.message.contains("spec.size"), "{}", status.message);
    // v1beta1 keeps everything (its own schema), v1 reads it back.
    let created = beta
        .create(
            &PostParams::default(),
            &w("v1beta1", json!({"size": 3, "extra": true})),
        )
        .await
        .unwrap();
    assert!(created.metadata.namespace.is_none());
    assert_eq!(v1.get("w").await.unwrap().data["spec"]["extra"], true);
    // And the Istio CRDs are still there.
    entries(&server, "v1")
        .list(&ListParams::default())
        .await
        .unwrap();
}
