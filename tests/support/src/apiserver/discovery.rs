//! Legacy (unaggregated) discovery documents: `/version`, `/api`, `/api/v1`,
//! `/apis`, `/apis/{group}` and `/apis/{group}/{version}` (the authorization
//! API's too), and the OpenAPI documents of module `openapi`. Clients that ask for
//! aggregated discovery get the legacy format with `Content-Type:
//! application/json`, which kubectl and kube accept as a fallback.

use serde_json::{Value, json};

use super::request::Route;
use super::resources::{Registry, version_priority};
use super::status::ApiError;
use super::{authz, openapi};

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
            "groups": groups(registry).iter().map(|(g, vs)| group_doc(g, vs)).collect::<Vec<_>>(),
        })),
        Route::Group(g) => groups(registry)
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
        Route::OpenApiRoot => Ok(openapi::root(registry)),
        Route::OpenApi { group, version } => Ok(openapi::document(registry, group, version)),
        Route::Resource(_) | Route::AccessReview => Err(ApiError::not_found_path()),
    }
}

/// The registry's groups and the authorization API's.
fn groups(registry: &Registry) -> Vec<(String, Vec<String>)> {
    let mut groups = registry.groups();
    groups.push((authz::GROUP.into(), vec![authz::VERSION.into()]));
    groups
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
    if authz::serves(group, version) {
        return json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{group}/{version}"),
            "resources": authz::discovery_resources(),
        });
    }
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

    /// (name, kind, shortNames, categories, status) of an entry.
    fn entry(list: &Value, name: &str) -> (String, Value, Value) {
        let r = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"));
        (
            r["kind"].as_str().unwrap().to_string(),
            r["shortNames"].clone(),
            r["categories"].clone(),
        )
    }

    #[test]
    fn lists_services_and_the_default_istio_kinds_as_the_real_server() {
        let crds = crate::apiserver::ISTIO_CRDS
            .iter()
            .flat_map(|y| parse_crds(y).unwrap())
            .collect();
        let reg = Registry::new(crds);
        let list = |group: &str, version: &str| {
            answer(
                &reg,
                &Route::Resources {
                    group: group.into(),
                    version: version.into(),
                },
                "x",
            )
            .unwrap()
        };
        let core = list("", "v1");
        let istio = list("networking.istio.io", "v1");
        let istio_categories = json!(["istio-io", "networking-istio-io"]);
        // (list, name, kind, shortNames, categories): v1.37 and Istio 86c9f01f.
        let cases = [
            (&core, "services", "Service", json!(["svc"]), json!(["all"])),
            (
                &core,
                "services/status",
                "Service",
                Value::Null,
                Value::Null,
            ),
            (
                &istio,
                "serviceentries",
                "ServiceEntry",
                json!(["se"]),
                istio_categories.clone(),
            ),
            (
                &istio,
                "serviceentries/status",
                "ServiceEntry",
                Value::Null,
                Value::Null,
            ),
            (
                &istio,
                "sidecars",
                "Sidecar",
                Value::Null,
                istio_categories.clone(),
            ),
            (
                &istio,
                "sidecars/status",
                "Sidecar",
                Value::Null,
                Value::Null,
            ),
            (
                &istio,
                "workloadentries",
                "WorkloadEntry",
                json!(["we"]),
                istio_categories.clone(),
            ),
            (
                &istio,
                "workloadgroups",
                "WorkloadGroup",
                json!(["wg"]),
                istio_categories,
            ),
        ];
        for (doc, name, kind, short, categories) in cases {
            assert_eq!(
                entry(doc, name),
                (kind.to_string(), short, categories),
                "{name}"
            );
        }
        for version in ["v1alpha3", "v1beta1"] {
            let older = list("networking.istio.io", version);
            for name in ["serviceentries", "sidecars"] {
                assert!(!entry(&older, name).0.is_empty(), "{name} {version}");
            }
        }
    }
}
