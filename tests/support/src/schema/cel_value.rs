//! A JSON value as CEL sees it under its schema, as Kubernetes'
//! `UnstructuredToVal` presents it: declared properties by their escaped
//! names, integers as `int`, `number` as `double`, `date-time` strings as
//! timestamps. Strings and keys borrow from the JSON.

use super::node::{Additional, Node};
use base64::Engine;
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
    CelTimestamp,
};
use cel::common::value::Val;
use serde_json::Value;
use std::collections::HashMap;

/// `value` under `node` (`None`: no schema, any JSON goes through as is).
/// `resource_root` adds what Kubernetes adds at an object's root:
/// `apiVersion`, `kind`, and `metadata.name` / `metadata.generateName`.
pub(super) fn to_val<'v>(
    value: &'v Value,
    node: Option<&Node>,
    resource_root: bool,
) -> Box<dyn Val + 'v> {
    match value {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => {
            let as_double = node.is_some_and(|n| n.type_name == "number");
            match n.as_i64() {
                Some(i) if !as_double => Box::new(CelInt::from(i)),
                _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
            }
        }
        Value::String(s) => string_val(s, node),
        Value::Array(items) => {
            let item_node = node.and_then(|n| n.items.as_deref());
            let list: Vec<Box<dyn Val + 'v>> = items
                .iter()
                .map(|v| to_val(v, item_node, item_node.is_some_and(|n| n.embedded_resource)))
                .collect();
            Box::new(CelList::from(list))
        }
        Value::Object(map) => {
            let mut out: HashMap<CelMapKey<'v>, Box<dyn Val + 'v>> =
                HashMap::with_capacity(map.len());
            let structured = node.filter(|n| !n.properties.is_empty());
            match (structured, node.map(|n| &n.additional)) {
                (Some(n), _) => {
                    for (k, v) in map {
                        if let Some(prop) = n.properties.get(k)
                            && let Some(name) = escape(k)
                        {
                            out.insert(
                                CelMapKey::String(CelString::from(name)),
                                to_val(v, Some(prop), prop.embedded_resource),
                            );
                        }
                    }
                }
                (None, Some(Additional::Schema(sub))) => {
                    for (k, v) in map {
                        out.insert(
                            CelMapKey::String(CelString::from(k.as_str())),
                            to_val(v, Some(sub), sub.embedded_resource),
                        );
                    }
                }
                _ => {
                    for (k, v) in map {
                        out.insert(
                            CelMapKey::String(CelString::from(k.as_str())),
                            to_val(v, None, false),
                        );
                    }
                }
            }
            if resource_root {
                add_root_fields(map, &mut out);
            }
            Box::new(CelMap::from(out))
        }
    }
}

fn add_root_fields<'v>(
    map: &'v serde_json::Map<String, Value>,
    out: &mut HashMap<CelMapKey<'v>, Box<dyn Val + 'v>>,
) {
    for field in ["apiVersion", "kind"] {
        if let Some(Value::String(s)) = map.get(field) {
            out.insert(
                CelMapKey::String(CelString::from(field)),
                Box::new(CelString::from(s.as_str())),
            );
        }
    }
    if let Some(Value::Object(meta)) = map.get("metadata") {
        let mut m: HashMap<CelMapKey<'v>, Box<dyn Val + 'v>> = HashMap::new();
        for field in ["name", "generateName"] {
            if let Some(Value::String(s)) = meta.get(field) {
                m.insert(
                    CelMapKey::String(CelString::from(field)),
                    Box::new(CelString::from(s.as_str())),
                );
            }
        }
        out.insert(
            CelMapKey::String(CelString::from("metadata")),
            Box::new(CelMap::from(m)),
        );
    }
}

fn string_val<'v>(s: &'v str, node: Option<&Node>) -> Box<dyn Val + 'v> {
    let format = node.map_or("", |n| n.format.as_str());
    match format {
        "date-time" | "datetime" => {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                return Box::new(CelTimestamp::from(t));
            }
        }
        "date" => {
            if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                && let Some(t) = d.and_hms_opt(0, 0, 0)
            {
                return Box::new(CelTimestamp::from(t.and_utc().fixed_offset()));
            }
        }
        "byte" => {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s) {
                return Box::new(CelBytes::from(bytes));
            }
        }
        _ => {}
    }
    Box::new(CelString::from(s))
}

const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Kubernetes' `cel.Escape`: the name a property has in CEL, or `None` when
/// it cannot be named (and is left out).
pub(super) fn escape(name: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    let first = name.chars().next()?;
    if first.is_ascii_digit() {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(Cow::Owned(format!("__{name}__")));
    }
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.contains("__");
    if plain {
        return Some(Cow::Borrowed(name));
    }
    let mut out = String::with_capacity(name.len() + 16);
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("__") {
            out.push_str("__underscores__");
            rest = &rest[2..];
            continue;
        }
        match c {
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(name: &str) -> Option<String> {
        escape(name).map(|c| c.into_owned())
    }

    #[test]
    fn names_are_escaped_like_kubernetes() {
        assert_eq!(escaped("address").as_deref(), Some("address"));
        assert_eq!(escaped("namespace").as_deref(), Some("__namespace__"));
        assert_eq!(
            escaped("x-y.z/w").as_deref(),
            Some("x__dash__y__dot__z__slash__w")
        );
        assert_eq!(escaped("a__b").as_deref(), Some("a__underscores__b"));
        assert_eq!(escaped("1abc"), None);
        assert_eq!(escaped("a b"), None);
    }
}
