//! Structural pruning (`pkg/apiserver/schema/pruning`), dropping nulls the
//! schema does not allow, and defaulting (`schema/defaulting`).

use super::node::{Additional, Node};
use serde_json::{Map, Value};

const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Removes what `node` does not declare. At a resource root (the object
/// itself, or an `x-kubernetes-embedded-resource`), `apiVersion`, `kind` and
/// `metadata` are kept untouched.
pub(super) fn prune(node: Option<&Node>, value: &mut Value, resource_root: bool) {
    if let Some(n) = node
        && n.preserve_unknown
    {
        skip_prune(n, value, resource_root);
        return;
    }
    match value {
        Value::Object(map) => {
            let Some(n) = node else {
                map.clear();
                return;
            };
            map.retain(|k, v| {
                if (resource_root || n.embedded_resource) && META_FIELDS.contains(&k.as_str()) {
                    return true;
                }
                if let Some(prop) = n.properties.get(k) {
                    prune(Some(prop), v, prop.embedded_resource);
                    return true;
                }
                match &n.additional {
                    Additional::Schema(sub) => {
                        prune(Some(sub), v, sub.embedded_resource);
                        true
                    }
                    // `true` allows anything (Kubernetes would prune the
                    // value as schemaless; keeping it is the lenient choice).
                    Additional::Any => true,
                    Additional::Absent | Additional::Forbidden => false,
                }
            });
        }
        Value::Array(items) => {
            let item = node.and_then(|n| n.items.as_deref());
            for v in items {
                prune(item, v, item.is_some_and(|i| i.embedded_resource));
            }
        }
        _ => {}
    }
}

/// Under `x-kubernetes-preserve-unknown-fields`: unknown fields stay, known
/// ones are still pruned below.
fn skip_prune(node: &Node, value: &mut Value, resource_root: bool) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if (resource_root || node.embedded_resource) && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(prop) = node.properties.get(k) {
                    prune(Some(prop), v, prop.embedded_resource);
                } else if let Additional::Schema(sub) = &node.additional {
                    prune(Some(sub), v, sub.embedded_resource);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = node.items.as_deref() {
                for v in items {
                    skip_prune(item, v, item.embedded_resource);
                }
            }
        }
        _ => {}
    }
}

/// `PruneNonNullableNullsWithoutDefaults`: a `null` property whose schema is
/// neither nullable nor defaulted is removed.
pub(super) fn drop_nulls(node: &Node, value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, v| match node.properties.get(k) {
                Some(prop) => !(v.is_null() && prop.default.is_none() && !prop.nullable),
                None => true,
            });
            for (k, v) in map.iter_mut() {
                if let Some(prop) = node.properties.get(k) {
                    drop_nulls(prop, v);
                } else if let Additional::Schema(sub) = &node.additional {
                    drop_nulls(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = node.items.as_deref() {
                items.iter_mut().for_each(|v| drop_nulls(item, v));
            }
        }
        _ => {}
    }
}

fn is_non_nullable_null(v: &Value, node: &Node) -> bool {
    v.is_null() && !node.nullable
}

/// `structuraldefaulting.Default`: absent (or non-nullable `null`)
/// properties, map values and items get their schema's `default`.
pub(super) fn apply_defaults(node: &Node, value: &mut Value) {
    match value {
        Value::Object(map) => {
            default_properties(node, map);
            for (k, v) in map.iter_mut() {
                if let Some(prop) = node.properties.get(k) {
                    apply_defaults(prop, v);
                } else if let Additional::Schema(sub) = &node.additional {
                    if is_non_nullable_null(v, sub)
                        && let Some(d) = &sub.default
                    {
                        *v = d.clone();
                    }
                    apply_defaults(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = node.items.as_deref() {
                for v in items {
                    if is_non_nullable_null(v, item)
                        && let Some(d) = &item.default
                    {
                        *v = d.clone();
                    }
                    apply_defaults(item, v);
                }
            }
        }
        _ => {}
    }
}

fn default_properties(node: &Node, map: &mut Map<String, Value>) {
    for (k, prop) in &node.properties {
        let Some(d) = &prop.default else { continue };
        match map.get_mut(k) {
            None => {
                map.insert(k.clone(), d.clone());
            }
            Some(v) if is_non_nullable_null(v, prop) => *v = d.clone(),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(schema: Value) -> Node {
        Node::parse(&schema, "").unwrap()
    }

    #[test]
    fn unknown_fields_are_pruned_except_where_preserved() {
        let n = node(json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "a": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "integer"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"known": {"type": "object", "properties": {"k": {"type": "string"}}}}},
                "embedded": {"type": "object", "x-kubernetes-embedded-resource": true,
                    "properties": {"spec": {"type": "object"}}}}}}}));
        let mut obj = json!({
            "apiVersion": "v1", "kind": "K", "metadata": {"name": "n", "odd": 1},
            "spec": {"a": "x", "gone": 1, "labels": {"l": "v"},
                "items": [{"x": 1, "y": 2}],
                "free": {"anything": {"deep": true}, "known": {"k": "v", "drop": 1}},
                "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}, "extra": 1}},
            "status": {"x": 1}});
        prune(Some(&n), &mut obj, true);
        assert_eq!(
            obj,
            json!({
            "apiVersion": "v1", "kind": "K", "metadata": {"name": "n", "odd": 1},
            "spec": {"a": "x", "labels": {"l": "v"}, "items": [{"x": 1}],
                "free": {"anything": {"deep": true}, "known": {"k": "v"}},
                "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}}})
        );
    }

    #[test]
    fn nulls_are_dropped_and_defaults_applied() {
        let n = node(json!({"type": "object", "properties": {
            "a": {"type": "string"},
            "b": {"type": "string", "nullable": true},
            "c": {"type": "string", "default": "dc"},
            "d": {"type": "object", "default": {}, "properties": {"e": {"type": "integer", "default": 5}}}}}));
        let mut obj = json!({"a": null, "b": null, "c": null});
        drop_nulls(&n, &mut obj);
        assert_eq!(obj, json!({"b": null, "c": null}));
        apply_defaults(&n, &mut obj);
        assert_eq!(obj, json!({"b": null, "c": "dc", "d": {"e": 5}}));
    }
}
