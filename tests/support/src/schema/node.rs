//! One `openAPIV3Schema` node, read once from its JSON form into the shape the
//! validators walk: keywords parsed, patterns and CEL rules compiled.

use super::SchemaError;
use super::cel::{self, Rule};
use super::formats;
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `additionalProperties`.
#[derive(Debug)]
pub(super) enum Additional {
    /// Absent: only `properties` are known.
    Absent,
    /// `additionalProperties: true`: any key, any value.
    Any,
    /// `additionalProperties: false`.
    Forbidden,
    /// `additionalProperties: {schema}`: a map.
    Schema(Box<Node>),
}

/// `x-kubernetes-list-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListType {
    Atomic,
    Set,
    Map,
}

#[derive(Debug)]
pub(super) struct Node {
    /// `type` as written (`""` when absent): what CEL errors show as the value.
    pub type_name: String,
    /// The types the type check accepts: `type`, or integer and string for
    /// `x-kubernetes-int-or-string`; empty means any.
    pub types: Vec<&'static str>,
    pub nullable: bool,
    pub int_or_string: bool,
    /// `format`, kept only where the real server checks it.
    pub format: String,
    pub preserve_unknown: bool,
    pub embedded_resource: bool,
    pub properties: BTreeMap<String, Node>,
    pub additional: Additional,
    pub items: Option<Box<Node>>,
    pub required: Vec<String>,
    pub enum_values: Option<Vec<Value>>,
    pub maximum: Option<f64>,
    pub exclusive_maximum: bool,
    pub minimum: Option<f64>,
    pub exclusive_minimum: bool,
    pub multiple_of: Option<f64>,
    pub max_length: Option<i64>,
    pub min_length: Option<i64>,
    pub pattern: Option<(String, Regex)>,
    pub max_items: Option<i64>,
    pub min_items: Option<i64>,
    pub unique_items: bool,
    pub max_properties: Option<i64>,
    pub min_properties: Option<i64>,
    pub all_of: Vec<Node>,
    pub any_of: Vec<Node>,
    pub one_of: Vec<Node>,
    pub not: Option<Box<Node>>,
    pub list_type: Option<ListType>,
    pub list_map_keys: Vec<String>,
    pub default: Option<Value>,
    pub rules: Vec<Rule>,
    /// Whether this node or one below it (allOf included) has CEL rules, so
    /// the CEL walk can skip whole subtrees.
    pub has_rules: bool,
    /// Whether a rule here or below uses `oldSelf`.
    pub has_transition_rules: bool,
    /// Whether this node or one below has `x-kubernetes-list-type` set/map.
    pub has_list_types: bool,
}

fn err(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: if path.is_empty() {
            "<root>".to_owned()
        } else {
            path.to_owned()
        },
        message: message.into(),
    }
}

fn as_obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, SchemaError> {
    v.as_object()
        .ok_or_else(|| err(path, "schema must be an object"))
}

fn int_kw(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<i64>, SchemaError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| err(path, format!("{key} must be an integer"))),
    }
}

fn num_kw(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<f64>, SchemaError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| err(path, format!("{key} must be a number"))),
    }
}

fn bool_kw(o: &Map<String, Value>, key: &str) -> bool {
    o.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn child(path: &str, seg: &str) -> String {
    if path.is_empty() {
        seg.to_owned()
    } else {
        format!("{path}.{seg}")
    }
}

impl Node {
    /// Reads the schema node at `path` (for error messages only).
    pub(super) fn parse(schema: &Value, path: &str) -> Result<Node, SchemaError> {
        let o = as_obj(schema, path)?;
        if o.contains_key("$ref") {
            return Err(err(path, "$ref is not allowed in a CRD schema"));
        }
        let type_name = match o.get("type") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(err(path, "type must be a string")),
        };
        let declared: Option<&'static str> = match type_name.as_str() {
            "" => None,
            "object" => Some("object"),
            "array" => Some("array"),
            "string" => Some("string"),
            "integer" => Some("integer"),
            "number" => Some("number"),
            "boolean" => Some("boolean"),
            other => return Err(err(path, format!("unsupported type {other:?}"))),
        };
        let int_or_string = bool_kw(o, "x-kubernetes-int-or-string");
        let types = if int_or_string {
            vec!["integer", "string"]
        } else {
            declared.into_iter().collect()
        };
        let format = strip_format(
            o.get("format").and_then(Value::as_str).unwrap_or(""),
            &type_name,
        );

        let mut properties = BTreeMap::new();
        if let Some(props) = o.get("properties") {
            for (name, sub) in as_obj(props, path)? {
                properties.insert(name.clone(), Node::parse(sub, &child(path, name))?);
            }
        }
        let additional = match o.get("additionalProperties") {
            None | Some(Value::Null) => Additional::Absent,
            Some(Value::Bool(true)) => Additional::Any,
            Some(Value::Bool(false)) => Additional::Forbidden,
            Some(sub) => Additional::Schema(Box::new(Node::parse(sub, &child(path, "*"))?)),
        };
        let items = match o.get("items") {
            None | Some(Value::Null) => None,
            Some(Value::Array(_)) => {
                return Err(err(path, "items must be a single schema, not a list"));
            }
            Some(sub) => Some(Box::new(Node::parse(sub, &format!("{path}[*]"))?)),
        };
        let required = match o.get("required") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|n| {
                    n.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| err(path, "required must list strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err(path, "required must be a list")),
        };
        let enum_values = match o.get("enum") {
            None | Some(Value::Null) => None,
            Some(Value::Array(values)) => Some(values.clone()),
            Some(_) => return Err(err(path, "enum must be a list")),
        };
        let pattern = match o.get("pattern").and_then(Value::as_str) {
            None => None,
            Some(p) => Some((
                p.to_owned(),
                Regex::new(p).map_err(|e| err(path, format!("pattern {p:?} is invalid: {e}")))?,
            )),
        };
        let branches = |key: &str| -> Result<Vec<Node>, SchemaError> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(list)) => list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Node::parse(s, &format!("{path}.{key}[{i}]")))
                    .collect(),
                Some(_) => Err(err(path, format!("{key} must be a list"))),
            }
        };
        let all_of = branches("allOf")?;
        let any_of = branches("anyOf")?;
        let one_of = branches("oneOf")?;
        let not = match o.get("not") {
            None | Some(Value::Null) => None,
            Some(sub) => Some(Box::new(Node::parse(sub, &format!("{path}.not"))?)),
        };
        let list_type = match o.get("x-kubernetes-list-type").and_then(Value::as_str) {
            None => None,
            Some("atomic") => Some(ListType::Atomic),
            Some("set") => Some(ListType::Set),
            Some("map") => Some(ListType::Map),
            Some(other) => {
                return Err(err(
                    path,
                    format!("unknown x-kubernetes-list-type {other:?}"),
                ));
            }
        };
        let list_map_keys: Vec<String> = o
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if list_type == Some(ListType::Map) && list_map_keys.is_empty() {
            return Err(err(
                path,
                "x-kubernetes-list-map-keys must be set for x-kubernetes-list-type map",
            ));
        }

        let mut node = Node {
            type_name,
            types,
            nullable: bool_kw(o, "nullable"),
            int_or_string,
            format,
            preserve_unknown: bool_kw(o, "x-kubernetes-preserve-unknown-fields"),
            embedded_resource: bool_kw(o, "x-kubernetes-embedded-resource"),
            properties,
            additional,
            items,
            required,
            enum_values,
            maximum: num_kw(o, "maximum", path)?,
            exclusive_maximum: bool_kw(o, "exclusiveMaximum"),
            minimum: num_kw(o, "minimum", path)?,
            exclusive_minimum: bool_kw(o, "exclusiveMinimum"),
            multiple_of: num_kw(o, "multipleOf", path)?,
            max_length: int_kw(o, "maxLength", path)?,
            min_length: int_kw(o, "minLength", path)?,
            pattern,
            max_items: int_kw(o, "maxItems", path)?,
            min_items: int_kw(o, "minItems", path)?,
            unique_items: bool_kw(o, "uniqueItems"),
            max_properties: int_kw(o, "maxProperties", path)?,
            min_properties: int_kw(o, "minProperties", path)?,
            all_of,
            any_of,
            one_of,
            not,
            list_type,
            list_map_keys,
            default: o.get("default").cloned(),
            rules: Vec::new(),
            has_rules: false,
            has_transition_rules: false,
            has_list_types: false,
        };

        if let Some(rules) = o.get("x-kubernetes-validations") {
            let rules = rules
                .as_array()
                .ok_or_else(|| err(path, "x-kubernetes-validations must be a list"))?;
            for (i, raw) in rules.iter().enumerate() {
                let rule = cel::compile_rule(raw, &node)
                    .map_err(|m| err(&format!("{path}.x-kubernetes-validations[{i}]"), m))?;
                node.rules.push(rule);
            }
        }
        node.summarise();
        Ok(node)
    }

    /// Fills the `has_*` flags from this node's keywords and its children.
    fn summarise(&mut self) {
        let children = self
            .properties
            .values()
            .chain(self.items.as_deref())
            .chain(match &self.additional {
                Additional::Schema(s) => Some(s.as_ref()),
                _ => None,
            })
            .chain(self.all_of.iter());
        let (mut rules, mut transition, mut lists) = (false, false, false);
        for c in children {
            rules |= c.has_rules;
            transition |= c.has_transition_rules;
            lists |= c.has_list_types;
        }
        self.has_rules = rules || !self.rules.is_empty();
        self.has_transition_rules = transition || self.rules.iter().any(|r| r.uses_old_self);
        self.has_list_types =
            lists || matches!(self.list_type, Some(ListType::Set | ListType::Map));
    }
}

/// `StripUnsupportedFormatsPostProcessorForVersion`: a format the real
/// server does not know for this type is ignored.
fn strip_format(format: &str, type_name: &str) -> String {
    let keep = match type_name {
        "" | "string" => formats::known(format),
        "integer" => format == "int32" || format == "int64",
        "number" => format == "float" || format == "double",
        _ => false,
    };
    if keep {
        format.to_owned()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unsupported_formats_are_dropped() {
        let n = Node::parse(&json!({"type": "integer", "format": "uint32"}), "").unwrap();
        assert_eq!(n.format, "");
        let n = Node::parse(&json!({"type": "integer", "format": "int32"}), "").unwrap();
        assert_eq!(n.format, "int32");
        let n = Node::parse(&json!({"type": "string", "format": "date-time"}), "").unwrap();
        assert_eq!(n.format, "date-time");
        let n = Node::parse(&json!({"type": "string", "format": "fancy"}), "").unwrap();
        assert_eq!(n.format, "");
    }

    #[test]
    fn bad_schemas_are_refused() {
        assert!(Node::parse(&json!({"type": "strnig"}), "").is_err());
        assert!(Node::parse(&json!({"type": "string", "pattern": "("}), "").is_err());
        assert!(Node::parse(&json!({"$ref": "#/x"}), "").is_err());
        let e = Node::parse(
            &json!({"properties": {"a": {"type": "array", "x-kubernetes-list-type": "map"}}}),
            "",
        )
        .unwrap_err();
        assert_eq!(e.path, "a");
    }

    #[test]
    fn rule_flags_bubble_up() {
        let n = Node::parse(
            &json!({"type": "object", "properties": {"a": {"type": "object", "properties": {
                "b": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}},
                "c": {"type": "string"}}}),
            "",
        )
        .unwrap();
        assert!(n.has_rules && n.has_transition_rules);
        assert!(!n.properties["c"].has_rules);
    }
}
