//! OpenAPI v3: the `/openapi/v3` index and one document per group-version,
//! with the paths and parameters (kubectl reads them to learn that the server
//! validates fields itself, `fieldValidation`) and the schemas `kubectl
//! explain` walks: a CRD's `openAPIV3Schema` as the real server publishes it
//! (`apiVersion`, `kind` and `metadata` added, `x-kubernetes-group-version-kind`),
//! and the built-in kinds' schemas of a real server (a fixture).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::authz;
use super::resources::{Registry, ResourceDef};

const REF_PREFIX: &str = "#/components/schemas/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const CONVENTIONS: &str =
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md";

/// The meta schemas every CRD group-version document of a real server carries.
const META: [&str; 13] = [
    "DeleteOptions",
    "FieldsV1",
    "ListMeta",
    "ManagedFieldsEntry",
    "ObjectMeta",
    "OwnerReference",
    "Patch",
    "Preconditions",
    "ShardInfo",
    "Status",
    "StatusCause",
    "StatusDetails",
    "Time",
];

/// Schemas of a real kube-apiserver (see the fixture's `origin`).
fn fixture() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let doc: Value =
            serde_json::from_str(include_str!("../../fixtures/openapi-v3-components.json"))
                .expect("the OpenAPI fixture is JSON");
        doc["schemas"].as_object().cloned().unwrap_or_default()
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every group-version served, the authorization API's included.
fn group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut gvs: Vec<(String, String)> = Vec::new();
    for r in &registry.resources {
        for v in &r.versions {
            let gv = (r.group.clone(), v.name.clone());
            if !gvs.contains(&gv) {
                gvs.push(gv);
            }
        }
    }
    gvs.push((authz::GROUP.into(), authz::VERSION.into()));
    gvs
}

/// Whether a document is served for `group`/`version`.
pub fn serves(registry: &Registry, group: &str, version: &str) -> bool {
    registry.serves(group, version) || authz::serves(group, version)
}

/// The index: each document's URL, with a hash of its content (clients cache
/// documents by URL).
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions(registry) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        document(registry, &g, &v).to_string().hash(&mut h);
        let p = gv_path(&g, &v);
        let url = format!("/openapi/v3/{p}?hash={:016X}", h.finish());
        paths.insert(p, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// The document of one group-version.
pub fn document(registry: &Registry, group: &str, version: &str) -> Value {
    let served: Vec<&ResourceDef> = registry
        .resources
        .iter()
        .filter(|r| r.group == group && r.version(version).is_some())
        .collect();
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in &served {
        resource_paths(r, version, &mut paths);
        kind_schemas(r, version, &mut schemas);
    }
    if authz::serves(group, version) {
        review_paths(&mut paths);
        add_builtin(
            &mut schemas,
            "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
        );
    }
    let custom = served.iter().any(|r| r.custom);
    if !served.is_empty() {
        for name in META {
            add_builtin(
                &mut schemas,
                &format!("io.k8s.apimachinery.pkg.apis.meta.v1.{name}"),
            );
        }
    }
    close_over_refs(&mut schemas);
    if !custom && let Some(delete) = schemas.get_mut(DELETE_OPTIONS) {
        // A built-in group's document names DeleteOptions in core v1 and in
        // its own group only (a CRD's, in every group: the fixture's).
        let mut gvks = vec![json!({"group": "", "kind": "DeleteOptions", "version": "v1"})];
        if !group.is_empty() {
            gvks.push(json!({"group": group, "kind": "DeleteOptions", "version": version}));
        }
        delete["x-kubernetes-group-version-kind"] = Value::Array(gvks);
    }
    let info = if custom {
        json!({"title": "Kubernetes CRD Swagger", "version": "v0.1.0"})
    } else {
        json!({"title": "Kubernetes", "version": "v1.32.0-meshmirror-testkit"})
    };
    json!({
        "openapi": "3.0.0",
        "info": info,
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The name the real server gives a CRD kind's schema: the group reversed
/// (`meshmirror.io` → `io.meshmirror`), the version, the kind.
fn crd_schema_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// A built-in kind's schema name (`io.k8s.api.core.v1.Namespace`).
fn builtin_schema_name(group: &str, version: &str, kind: &str) -> String {
    let short = group
        .split('.')
        .next()
        .filter(|g| !g.is_empty())
        .unwrap_or("core");
    format!("io.k8s.api.{short}.{version}.{kind}")
}

/// A built-in kind's schema with every `$ref` replaced by the schema it
/// names (a lone `allOf` member too, merged into the referring node, whose
/// own keys win): a single tree, as server-side apply's merge structure is
/// built from. None when the fixture does not have it.
pub fn builtin_resolved(name: &str) -> Option<Value> {
    fn resolve(v: &Value, depth: usize) -> Value {
        let Value::Object(m) = v else {
            return match v {
                Value::Array(a) => Value::Array(a.iter().map(|x| resolve(x, depth)).collect()),
                other => other.clone(),
            };
        };
        let target = m.get("$ref").or_else(|| match m.get("allOf") {
            Some(Value::Array(all)) if all.len() == 1 => all[0].get("$ref"),
            _ => None,
        });
        let named = target
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(REF_PREFIX))
            .filter(|_| depth < 32)
            .and_then(|n| fixture().get(n));
        let mut out = match named {
            Some(Value::Object(def)) => match resolve(&Value::Object(def.clone()), depth + 1) {
                Value::Object(o) => o,
                _ => Map::new(),
            },
            _ => Map::new(),
        };
        for (k, x) in m {
            if named.is_some() && (k == "$ref" || k == "allOf") {
                continue;
            }
            out.insert(k.clone(), resolve(x, depth));
        }
        Value::Object(out)
    }
    fixture().get(name).map(|s| resolve(s, 0))
}

fn add_builtin(schemas: &mut Map<String, Value>, name: &str) {
    if let Some(s) = fixture().get(name) {
        schemas.insert(name.to_string(), s.clone());
    }
}

fn kind_schemas(r: &ResourceDef, version: &str, schemas: &mut Map<String, Value>) {
    let Some(crd) = r.version(version).and_then(|v| v.schema.as_deref()) else {
        add_builtin(schemas, &builtin_schema_name(&r.group, version, &r.kind));
        add_builtin(
            schemas,
            &builtin_schema_name(&r.group, version, &r.list_kind),
        );
        return;
    };
    let name = crd_schema_name(&r.group, version, &r.kind);
    let gvk = |kind: &str| json!([{"group": r.group, "kind": kind, "version": version}]);
    let mut schema = crd.clone();
    go_numbers(&mut schema);
    let props = schema["properties"].take();
    let mut props = props.as_object().cloned().unwrap_or_default();
    props.insert("apiVersion".into(), type_meta_field("apiVersion"));
    props.insert("kind".into(), type_meta_field("kind"));
    props.insert(
        "metadata".into(),
        json!({
            "description": format!("Standard object's metadata. More info: {CONVENTIONS}#metadata"),
            "allOf": [{"$ref": format!("{REF_PREFIX}{OBJECT_META}")}],
        }),
    );
    schema["properties"] = Value::Object(props);
    schema["x-kubernetes-group-version-kind"] = gvk(&r.kind);
    let list = json!({
        "description": format!("{} is a list of {}", r.list_kind, r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": type_meta_field("apiVersion"),
            "kind": type_meta_field("kind"),
            "items": {
                "description": format!("List of {}. More info: {CONVENTIONS}", r.plural),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{name}")},
            },
            "metadata": {
                "description": format!("Standard list metadata. More info: {CONVENTIONS}#types-kinds"),
                "allOf": [{"$ref": format!("{REF_PREFIX}{LIST_META}")}],
            },
        },
        "x-kubernetes-group-version-kind": gvk(&r.list_kind),
    });
    schemas.insert(crd_schema_name(&r.group, version, &r.list_kind), list);
    schemas.insert(name, schema);
}

/// Numbers as Go prints them: a whole float (YAML's `minimum: 0.0`) without
/// a fraction.
fn go_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                *v = json!(f as i64);
            }
        }
        Value::Object(m) => m.values_mut().for_each(go_numbers),
        Value::Array(a) => a.iter_mut().for_each(go_numbers),
        _ => {}
    }
}

fn type_meta_field(field: &str) -> Value {
    let description = if field == "apiVersion" {
        format!(
            "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: {CONVENTIONS}#resources"
        )
    } else {
        format!(
            "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: {CONVENTIONS}#types-kinds"
        )
    };
    json!({"description": description, "type": "string"})
}

/// Adds every schema the document's schemas reference (from the fixture).
fn close_over_refs(schemas: &mut Map<String, Value>) {
    let mut todo: Vec<String> = Vec::new();
    for s in schemas.values() {
        refs(s, &mut todo);
    }
    let mut seen: BTreeSet<String> = schemas.keys().cloned().collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(s) = fixture().get(&name) {
            refs(s, &mut todo);
            schemas.insert(name, s.clone());
        }
    }
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x.as_str()) {
                    ("$ref", Some(r)) => out.extend(r.strip_prefix(REF_PREFIX).map(String::from)),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string"}})
}

/// A resource's paths with their operations and query parameters.
fn resource_paths(r: &ResourceDef, version: &str, paths: &mut Map<String, Value>) {
    let gvk = json!({"group": r.group, "version": version, "kind": r.kind});
    let op = |action: &str, params: Vec<Value>| {
        json!({
            "operationId": format!("{action}{}", r.kind),
            "parameters": params,
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        })
    };
    let write_params = || {
        vec![
            param("dryRun"),
            param("fieldManager"),
            param("fieldValidation"),
        ]
    };
    let mut patch_params = write_params();
    patch_params.push(param("force"));
    let gv = gv_path(&r.group, version);
    let base = if r.namespaced {
        format!("/{gv}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("/{gv}/{}", r.plural)
    };
    paths.insert(
        base.clone(),
        json!({
            "get": op("list", vec![param("labelSelector"), param("fieldSelector"), param("limit"), param("continue"), param("watch")]),
            "post": op("post", write_params()),
            "delete": op("deletecollection", vec![param("labelSelector")]),
        }),
    );
    paths.insert(
        format!("{base}/{{name}}"),
        json!({
            "get": op("get", vec![]),
            "put": op("put", write_params()),
            "patch": op("patch", patch_params),
            "delete": op("delete", vec![param("dryRun"), param("propagationPolicy")]),
        }),
    );
}

fn review_paths(paths: &mut Map<String, Value>) {
    paths.insert(
        format!("/{}/{}", gv_path(authz::GROUP, authz::VERSION), authz::PLURAL),
        json!({"post": {
            "operationId": "createAuthorizationV1SelfSubjectAccessReview",
            "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
            "responses": {"201": {"description": "Created"}},
            "x-kubernetes-action": "post",
            "x-kubernetes-group-version-kind": {"group": authz::GROUP, "version": authz::VERSION, "kind": "SelfSubjectAccessReview"},
        }}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::parse_crds;

    fn registry() -> Registry {
        Registry::new(parse_crds(include_str!("../../../../deploy/crd.yaml")).unwrap())
    }

    #[test]
    fn crd_documents_carry_the_schema_as_the_real_server() {
        let doc = document(&registry(), "meshmirror.io", "v1alpha1");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let sgm = &schemas["io.meshmirror.v1alpha1.ScalingGroupMirror"];
        assert_eq!(
            sgm["x-kubernetes-group-version-kind"],
            json!([{"group": "meshmirror.io", "kind": "ScalingGroupMirror", "version": "v1alpha1"}])
        );
        assert!(sgm["properties"]["spec"]["properties"]["sync"].is_object());
        assert_eq!(
            sgm["properties"]["metadata"]["allOf"][0]["$ref"],
            format!("{REF_PREFIX}{OBJECT_META}")
        );
        assert!(schemas.contains_key("io.meshmirror.v1alpha1.ScalingGroupMirrorList"));
        assert!(schemas.contains_key(OBJECT_META));
        assert_eq!(schemas.len(), 2 + META.len(), "{:?}", schemas.keys());
    }

    #[test]
    fn built_in_schemas_resolve_into_one_tree() {
        let svc = builtin_resolved("io.k8s.api.core.v1.Service").unwrap();
        let spec = &svc["properties"]["spec"];
        assert_eq!(spec["type"], "object", "allOf member merged");
        assert!(
            spec["description"]
                .as_str()
                .unwrap()
                .starts_with("Spec defines")
        );
        let ports = &spec["properties"]["ports"];
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            json!(["port", "protocol"])
        );
        assert_eq!(
            ports["items"]["properties"]["protocol"]["default"], "TCP",
            "a lone $ref replaced"
        );
        assert_eq!(
            ports["items"]["properties"]["targetPort"]["format"],
            "int-or-string"
        );
        assert_eq!(
            spec["properties"]["selector"]["x-kubernetes-map-type"],
            "atomic"
        );
        assert!(!svc.to_string().contains("$ref"));
        assert!(builtin_resolved("io.k8s.api.core.v1.Nothing").is_none());
    }

    #[test]
    fn built_in_documents_and_the_index() {
        let reg = registry();
        let core = document(&reg, "", "v1");
        let schemas = core["components"]["schemas"].as_object().unwrap();
        for name in [
            "Namespace",
            "NamespaceList",
            "Event",
            "EventList",
            "ObjectReference",
            "Service",
            "ServiceList",
            "ServicePort",
        ] {
            assert!(
                schemas.contains_key(&format!("io.k8s.api.core.v1.{name}")),
                "{name}"
            );
        }
        let review = document(&reg, authz::GROUP, authz::VERSION);
        assert!(
            review["components"]["schemas"]["io.k8s.api.authorization.v1.SelfSubjectAccessReview"]
                .is_object()
        );
        let index = root(&reg);
        let url = index["paths"]["apis/meshmirror.io/v1alpha1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/meshmirror.io/v1alpha1?hash="));
        assert!(index["paths"]["apis/authorization.k8s.io/v1"].is_object());
        assert_eq!(
            crd_schema_name("networking.istio.io", "v1", "WorkloadEntry"),
            "io.istio.networking.v1.WorkloadEntry"
        );
    }
}
