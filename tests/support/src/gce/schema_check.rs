//! Holds the mock's JSON against the Compute Engine v1 discovery document
//! (`fixtures/gcp/discovery-compute-v1-subset.json`): every field it writes
//! exists in the schema, with the schema's type and enum values.

use serde_json::Value;

fn discovery() -> Value {
    let text = include_str!("../../fixtures/gcp/discovery-compute-v1-subset.json");
    let json = text.split_once('\n').map_or(text, |(_, rest)| rest);
    serde_json::from_str(json).expect("the discovery subset parses")
}

/// Problems of `value` against `schema`, with their JSON paths.
fn check(doc: &Value, value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        return check(doc, value, &doc["schemas"][name], path, out);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(map) = value.as_object() else {
                return out.push(format!("{path}: not an object"));
            };
            for (key, child) in map {
                let sub = &schema["properties"][key];
                if !sub.is_null() {
                    check(doc, child, sub, &format!("{path}.{key}"), out);
                } else if let Some(extra) = schema.get("additionalProperties") {
                    check(doc, child, extra, &format!("{path}[{key}]"), out);
                } else {
                    out.push(format!("{path}.{key}: not in the schema"));
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(doc, item, &schema["items"], &format!("{path}[{i}]"), out);
                }
            }
            None => out.push(format!("{path}: not an array")),
        },
        Some("string") => {
            let Some(s) = value.as_str() else {
                return out.push(format!("{path}: not a string"));
            };
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a == s)
            {
                out.push(format!("{path}: {s} is not one of the enum"));
            }
        }
        Some("integer") if !value.is_i64() && !value.is_u64() => {
            out.push(format!("{path}: not an integer"))
        }
        Some("boolean") if !value.is_boolean() => out.push(format!("{path}: not a boolean")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::super::render;
    use super::super::state::{MigKey, Template, World};
    use super::*;

    fn assert_fits(doc: &Value, value: &Value, schema: &str) {
        let mut problems = Vec::new();
        check(doc, value, &json!({"$ref": schema}), schema, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn the_mock_writes_only_what_the_discovery_document_defines() {
        let doc = discovery();
        let base = "http://127.0.0.1:1/compute/v1/";
        let mut world = World::default();
        let zonal = MigKey::zonal("p", "us-central1-a", "web");
        let regional = MigKey::regional("p", "europe-west1", "api");
        let template = Template {
            labels: BTreeMap::from([("team".into(), "pay".into())]),
            public_ip: true,
            ipv6: true,
            external_ipv6: true,
            health: Some("HEALTHY".into()),
        };
        world.add_mig(
            zonal.clone(),
            vec!["us-central1-a".into()],
            template.clone(),
        );
        world.add_mig(
            regional.clone(),
            vec!["europe-west1-b".into(), "europe-west1-c".into()],
            Template::default(),
        );
        world.resize(&zonal, 2);
        world.resize(&regional, 2);
        world.vms.values_mut().next().unwrap().action = "DELETING".into();

        for vm in world.vms.values() {
            assert_fits(&doc, &render::instance(base, vm), "Instance");
            assert_fits(&doc, &render::managed_instance(base, vm), "ManagedInstance");
        }
        for mig in world.migs.values() {
            let members = world.members(&mig.key);
            assert_fits(
                &doc,
                &render::instance_group_manager(base, mig, &members),
                "InstanceGroupManager",
            );
        }
        let scoped = json!({"warning": render::no_results("zones/us-east1-b")});
        assert_fits(&doc, &scoped, "InstancesScopedList");
        let aggregated = json!({
            "kind": "compute#instanceAggregatedList",
            "id": "projects/p/aggregated/instances",
            "items": {"zones/us-east1-b": scoped},
            "nextPageToken": "offset-1",
        });
        assert_fits(&doc, &aggregated, "InstanceAggregatedList");
    }

    #[test]
    fn the_checker_catches_strays_and_the_captures_pass_it() {
        let doc = discovery();
        let mut problems = Vec::new();
        let bad = json!({"name": "x", "status": "SLEEPING", "nmae": 1});
        check(
            &doc,
            &bad,
            &json!({"$ref": "Instance"}),
            "Instance",
            &mut problems,
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        let capture = |text: &str| -> Value {
            serde_json::from_str(text.split_once('\n').unwrap().1).unwrap()
        };
        assert_fits(
            &doc,
            &capture(include_str!(
                "../../fixtures/gcp/libcloud-instance-get.json"
            )),
            "Instance",
        );
        assert_fits(
            &doc,
            &capture(include_str!(
                "../../fixtures/gcp/libcloud-instances-aggregated-list.json"
            )),
            "InstanceAggregatedList",
        );
        assert_fits(
            &doc,
            &capture(include_str!(
                "../../fixtures/gcp/libcloud-igm-list-managed-instances.json"
            )),
            "InstanceGroupManagersListManagedInstancesResponse",
        );
    }
}
