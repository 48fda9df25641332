//! Legacy (unaggregated) discovery documents: `/version`, `/api`, `/api/v1`,
//! `/apis`, `/apis/{group}` and `/apis/{group}/{version}`. Clients that ask for
//! aggregated discovery get the legacy format with `Content-Type:
//! application/json`, which kubectl and kube accept as a fallback.

use serde_json::{Value, json};

use super::request::Route;
use super::resources::{Registry, version_priority};
use super::status::ApiError;

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn answer(registry: &Registry, route: &Route, server_addr: &str) -> Result<Value, ApiError> {
    match route {
        Route::Version => Ok(json!({
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0-meshmirror-testkit",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.23.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        })),
        Route::Health => Ok(json!("ok")),
        Route::CoreVersions => Ok(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}],
        })),
        Route::Groups => Ok(json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": registry.groups().iter().map(|(g, vs)| group_doc(g, vs)).collect::<Vec<_>>(),
        })),
        Route::Group(g) => registry
            .groups()
            .iter()
            .find(|(name, _)| name == g)
            .map(|(name, vs)| {
                let mut doc = group_doc(name, vs);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                doc
            })
            .ok_or_else(ApiError::not_found_path),
        Route::Resources { group, version } => Ok(resource_list(registry, group, version)),
        Route::OpenApiRoot => Ok(openapi_root(registry)),
        Route::OpenApi { group, version } => Ok(openapi_gv(registry, group, version)),
        Route::Resource(_) => Err(ApiError::not_found_path()),
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 index: kubectl reads it to learn that the server does
/// server-side field validation (`fieldValidation`), instead of validating
/// on the client.
fn openapi_root(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(String, String)> = Vec::new();
    for r in &registry.resources {
        for v in &r.versions {
            let gv = (r.group.clone(), v.name.clone());
            if !gvs.contains(&gv) {
                gvs.push(gv);
            }
        }
    }
    for (g, v) in gvs {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0")}),
        );
    }
    json!({ "paths": paths })
}

/// A minimal OpenAPI v3 document of one group-version: its paths with their
/// operations and parameters, no schemas.
fn openapi_gv(registry: &Registry, group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
    for r in registry
        .resources
        .iter()
        .filter(|r| r.group == group && r.version(version).is_some())
    {
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
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
        let base = if r.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(group, version),
                r.plural
            )
        } else {
            format!("/{}/{}", gv_path(group, version), r.plural)
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
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-meshmirror-testkit"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let mut vs = versions.to_vec();
    vs.sort_by(|a, b| version_priority(a, b));
    let entries: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": entries,
        "preferredVersion": entries.first().cloned().unwrap_or(Value::Null),
    })
}

fn resource_list(registry: &Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in registry
        .resources
        .iter()
        .filter(|r| r.group == group && r.version(version).is_some())
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        if r.version(version).is_some_and(|v| v.status_subresource) {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::parse_crds;

    #[test]
    fn lists_kinds_with_status_and_preferred_version() {
        let reg = Registry::new(
            parse_crds(include_str!("../../fixtures/workloadentry-crd.yaml")).unwrap(),
        );
        let list = answer(
            &reg,
            &Route::Resources {
                group: "networking.istio.io".into(),
                version: "v1alpha3".into(),
            },
            "127.0.0.1:1",
        )
        .unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["workloadentries", "workloadentries/status"]);
        assert_eq!(list["resources"][0]["shortNames"], json!(["we"]));
        let groups = answer(&reg, &Route::Groups, "x").unwrap();
        let istio = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "networking.istio.io")
            .unwrap();
        assert_eq!(istio["preferredVersion"]["version"], "v1");
        let core = answer(
            &reg,
            &Route::Resources {
                group: String::new(),
                version: "v1".into(),
            },
            "x",
        )
        .unwrap();
        assert_eq!(core["groupVersion"], "v1");
        assert!(
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "namespaces")
        );
    }
}
