//! `x-kubernetes-list-type: set | map` uniqueness, as apiextensions-apiserver's
//! `structural/listtype` checks it after the OpenAPI keywords.

use super::FieldCause;
use super::messages::{self, bad_value, go_json};
use super::node::{Additional, ListType, Node};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// `path` is a `field.Path` string (`spec.ports[1]`, `spec.labels[key]`).
pub(super) fn validate(node: &Node, data: &Value, path: &mut String, out: &mut Vec<FieldCause>) {
    if !node.has_list_types {
        return;
    }
    match data {
        Value::Array(items) => {
            match node.list_type {
                Some(ListType::Set) => {
                    for i in second_occurrences(items.iter().map(|v| Some(go_json(v)))) {
                        out.push(messages::duplicate(
                            &format!("{path}[{i}]"),
                            &bad_value(&items[i]),
                        ));
                    }
                }
                Some(ListType::Map) => check_map_list(node, items, path, out),
                _ => {}
            }
            if let Some(item_node) = node.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    validate(item_node, item, path, out);
                    path.truncate(len);
                }
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let len = path.len();
                if let Some(prop) = node.properties.get(k) {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    validate(prop, v, path, out);
                } else if let Additional::Schema(sub) = &node.additional {
                    path.push_str(&format!("[{k}]"));
                    validate(sub, v, path, out);
                }
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Indexes of the second occurrence of each repeated key (`None`: skipped).
fn second_occurrences(keys: impl Iterator<Item = Option<String>>) -> Vec<usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, key) in keys.enumerate() {
        let Some(key) = key else { continue };
        let times = seen.entry(key).or_insert(0);
        *times += 1;
        if *times == 2 {
            out.push(i);
        }
    }
    out
}

fn check_map_list(node: &Node, items: &[Value], path: &str, out: &mut Vec<FieldCause>) {
    for (i, item) in items.iter().enumerate() {
        if !item.is_null() && !item.is_object() {
            out.push(messages::invalid(
                &format!("{path}[{i}]"),
                &bad_value(item),
                "must be an object for an array of list-type map",
            ));
            return;
        }
    }
    let keys = &node.list_map_keys;
    let key_default = |k: &str| {
        node.items
            .as_deref()
            .and_then(|n| n.properties.get(k))
            .and_then(|p| p.default.clone())
    };
    let key_of = |item: &Value| -> Option<String> {
        let obj = item.as_object()?;
        let parts: Vec<String> = keys
            .iter()
            .map(|k| match obj.get(k).cloned().or_else(|| key_default(k)) {
                Some(v) => go_json(&v),
                None => "<unspecified>".to_owned(),
            })
            .collect();
        Some(parts.join("\u{0}"))
    };
    for i in second_occurrences(items.iter().map(key_of)) {
        let obj = items[i].as_object().cloned().unwrap_or_default();
        let dup: Map<String, Value> = keys
            .iter()
            .map(|k| (k.clone(), obj.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        out.push(messages::duplicate(
            &format!("{path}[{i}]"),
            &go_json(&Value::Object(dup)),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(schema: Value, data: Value) -> Vec<String> {
        let node = Node::parse(&schema, "").unwrap();
        let mut out = Vec::new();
        validate(&node, &data, &mut "spec.list".to_owned(), &mut out);
        out.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn sets_and_maps_refuse_duplicates() {
        let set =
            json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}});
        assert!(errors(set.clone(), json!(["a", "b"])).is_empty());
        assert_eq!(
            errors(set, json!(["a", "b", "a", "a"])),
            vec![r#"spec.list[2]: Duplicate value: "a""#]
        );
        let map = json!({"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["port", "protocol"],
            "items": {"type": "object", "properties": {"port": {"type": "integer"},
                "protocol": {"type": "string", "default": "TCP"}}}});
        assert!(
            errors(
                map.clone(),
                json!([{"port": 80}, {"port": 80, "protocol": "UDP"}])
            )
            .is_empty()
        );
        assert_eq!(
            errors(
                map.clone(),
                json!([{"port": 80}, {"port": 80, "protocol": "TCP"}])
            ),
            vec![r#"spec.list[1]: Duplicate value: {"port":80,"protocol":"TCP"}"#]
        );
        assert_eq!(
            errors(map, json!([{"port": 80}, 5])),
            vec!["spec.list[1]: Invalid value: 5: must be an object for an array of list-type map"]
        );
    }
}
