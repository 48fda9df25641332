//! The structure server-side apply needs to know about an object: which lists
//! merge by key or as sets, which maps are atomic, and which object keys are
//! declared fields (structured-merge-diff treats those differently from the
//! keys of a free-form map when recording ownership).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, field_pe};

/// How a list merges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListType {
    /// Replaced as a whole and owned as one leaf (the default for CRDs).
    Atomic,
    /// `x-kubernetes-list-type: set`: items are scalars, each owned as `v:…`.
    Set,
    /// `x-kubernetes-list-type: map`: items are objects keyed by these fields,
    /// each owned as `k:{…}`. An item without a key field takes the field's
    /// schema `default` (the second member: key field → default), as
    /// structured-merge-diff does: a Service port applied without `protocol`
    /// is the item `k:{"port":80,"protocol":"TCP"}`.
    Map(Vec<String>, Map<String, Value>),
}

impl ListType {
    /// A map list keyed by `keys`, none of them defaulted.
    pub(crate) fn keyed(keys: &[&str]) -> ListType {
        ListType::Map(keys.iter().map(|k| k.to_string()).collect(), Map::new())
    }
}

/// Merge structure of one node of an object.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    /// An object. `fields` are declared properties; other keys take `rest`
    /// (`additionalProperties`, or `Deduced` for preserved unknown fields)
    /// and, without it, are treated as declared fields of unknown shape.
    Object {
        fields: HashMap<String, Node>,
        rest: Option<Box<Node>>,
        /// `x-kubernetes-map-type: atomic`
        atomic: bool,
    },
    List {
        list_type: ListType,
        items: Box<Node>,
    },
    Scalar,
    /// No schema: objects merge key by key, keys count as declared fields,
    /// lists are atomic. What `apply` uses below the parts it knows.
    Loose,
    /// `x-kubernetes-preserve-unknown-fields` without properties: as the real
    /// server deduces it, objects merge key by key with every key owned as a
    /// map key, lists are atomic.
    Deduced,
}

/// The merge structure of one resource version, for
/// [`apply_with_schema`](super::apply_with_schema) and
/// [`record_update_with_schema`](super::record_update_with_schema).
#[derive(Clone, Debug)]
pub struct Schema {
    pub(crate) root: Node,
    status_subresource: bool,
}

impl Schema {
    /// The schema `apply` and `record_update` use: `ObjectMeta` as the real
    /// server types it (labels and annotations as maps, `ownerReferences`
    /// keyed by `uid`, `finalizers` a set), `status.conditions` keyed by
    /// `type`, everything else `Loose`.
    pub fn default_object() -> &'static Schema {
        static DEFAULT: OnceLock<Schema> = OnceLock::new();
        DEFAULT.get_or_init(|| Schema {
            status_subresource: false,
            root: {
                let status = Node::Object {
                    fields: HashMap::from([(
                        "conditions".to_owned(),
                        Node::List {
                            list_type: ListType::keyed(&["type"]),
                            items: Box::new(Node::Loose),
                        },
                    )]),
                    rest: None,
                    atomic: false,
                };
                with_object_meta(Node::Object {
                    fields: HashMap::from([("status".to_owned(), status)]),
                    rest: None,
                    atomic: false,
                })
            },
        })
    }

    /// Builds the schema of a CRD version from its `openAPIV3Schema`, the way
    /// the API server converts it: `x-kubernetes-list-type` and
    /// `x-kubernetes-list-map-keys` on arrays (atomic when absent),
    /// `x-kubernetes-map-type`, `additionalProperties` and
    /// `x-kubernetes-preserve-unknown-fields` on objects. `metadata` is always
    /// typed as `ObjectMeta`.
    pub fn from_openapi_v3(schema: &Value) -> Schema {
        Schema {
            root: with_object_meta(convert(schema)),
            status_subresource: false,
        }
    }

    /// Declares whether the resource has a `status` subresource. The real
    /// server then ignores `status` in main-resource writes and `spec` in
    /// status writes when recording ownership and finding conflicts (the
    /// strategy's reset fields: those parts are reset before storing).
    pub fn with_status_subresource(mut self, enabled: bool) -> Schema {
        self.status_subresource = enabled;
        self
    }

    /// The fields a write through `subresource` cannot change.
    pub(crate) fn reset_fields(&self, subresource: Option<&str>) -> Option<FieldSet> {
        let top = match subresource {
            None if self.status_subresource => "status",
            Some("status") => "spec",
            _ => return None,
        };
        let mut set = FieldSet::default();
        set.insert(&[field_pe(top)]);
        Some(set)
    }
}

static LOOSE: Node = Node::Loose;
static DEDUCED: Node = Node::Deduced;

impl Node {
    /// The schema of the value under object key `key`, and whether that key
    /// is a declared field (undeclared keys are owned as members even when
    /// their value is an object).
    pub(crate) fn field(&self, key: &str) -> (&Node, bool) {
        match self {
            Node::Object { fields, rest, .. } => match fields.get(key) {
                Some(s) => (s, true),
                None => match rest {
                    Some(s) => (s, false),
                    None => (&LOOSE, true),
                },
            },
            Node::Deduced => (&DEDUCED, false),
            _ => (&LOOSE, true),
        }
    }

    /// Whether an object value here merges key by key.
    pub(crate) fn granular_map(&self) -> bool {
        match self {
            Node::Object { atomic, .. } => !atomic,
            Node::Loose | Node::Deduced => true,
            Node::List { .. } | Node::Scalar => false,
        }
    }

    /// The list type and item schema for an array value here.
    pub(crate) fn list(&self) -> (&ListType, &Node) {
        static ATOMIC: ListType = ListType::Atomic;
        match self {
            Node::List { list_type, items } => (list_type, items),
            Node::Deduced => (&ATOMIC, &DEDUCED),
            _ => (&ATOMIC, &LOOSE),
        }
    }

    /// The schema below a FieldsV1 path element.
    pub(crate) fn child(&self, pe: &str) -> &Node {
        match pe.strip_prefix("f:") {
            Some(name) => self.field(name).0,
            None => self.list().1,
        }
    }

    /// Whether `pe` names a declared field of this object.
    pub(crate) fn is_named_field(&self, pe: &str) -> bool {
        match pe.strip_prefix("f:") {
            Some(name) => self.granular_map() && self.field(name).1,
            None => false,
        }
    }
}

fn string_map() -> Node {
    Node::Object {
        fields: HashMap::new(),
        rest: Some(Box::new(Node::Scalar)),
        atomic: false,
    }
}

fn object_meta() -> Node {
    let mut fields: HashMap<String, Node> = [
        "name",
        "namespace",
        "generateName",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), Node::Scalar))
    .collect();
    fields.insert("labels".to_owned(), string_map());
    fields.insert("annotations".to_owned(), string_map());
    // An OwnerReference is `+structType=atomic`: each reference is owned
    // as one element (`k:{"uid":...}: {}`), never field by field.
    fields.insert(
        "ownerReferences".to_owned(),
        Node::List {
            list_type: ListType::keyed(&["uid"]),
            items: Box::new(Node::Object {
                fields: HashMap::new(),
                rest: Some(Box::new(Node::Loose)),
                atomic: true,
            }),
        },
    );
    fields.insert(
        "finalizers".to_owned(),
        Node::List {
            list_type: ListType::Set,
            items: Box::new(Node::Scalar),
        },
    );
    fields.insert(
        "managedFields".to_owned(),
        Node::List {
            list_type: ListType::Atomic,
            items: Box::new(Node::Loose),
        },
    );
    Node::Object {
        fields,
        rest: None,
        atomic: false,
    }
}

fn with_object_meta(root: Node) -> Node {
    let mut root = match root {
        Node::Object { .. } => root,
        _ => Node::Object {
            fields: HashMap::new(),
            rest: Some(Box::new(Node::Deduced)),
            atomic: false,
        },
    };
    if let Node::Object { fields, .. } = &mut root {
        fields.insert("metadata".to_owned(), object_meta());
        fields.insert("apiVersion".to_owned(), Node::Scalar);
        fields.insert("kind".to_owned(), Node::Scalar);
    }
    root
}

fn convert(schema: &Value) -> Node {
    let flag = |name: &str| schema.get(name).and_then(Value::as_bool) == Some(true);
    if flag("x-kubernetes-int-or-string") {
        return Node::Scalar;
    }
    let preserve = flag("x-kubernetes-preserve-unknown-fields");
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => {
            let items = schema.get("items").map_or(Node::Deduced, convert);
            let list_type = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => ListType::Set,
                Some("map") => {
                    let keys: Vec<String> = schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|keys| {
                            keys.iter()
                                .filter_map(|k| k.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    let item_props = schema.pointer("/items/properties");
                    let defaults = keys
                        .iter()
                        .filter_map(|k| {
                            let d = item_props?.get(k)?.get("default")?;
                            Some((k.clone(), d.clone()))
                        })
                        .collect();
                    ListType::Map(keys, defaults)
                }
                _ => ListType::Atomic,
            };
            Node::List {
                list_type,
                items: Box::new(items),
            }
        }
        Some("object") | None if properties.is_some() || additional.is_some() || preserve => {
            let fields: HashMap<String, Node> = properties
                .map(|props| props.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
                .unwrap_or_default();
            let rest = match additional {
                Some(Value::Object(s)) if !s.is_empty() => {
                    Some(Box::new(convert(&Value::Object(s.clone()))))
                }
                Some(Value::Bool(true)) | Some(Value::Object(_)) => Some(Box::new(Node::Deduced)),
                _ if preserve => Some(Box::new(Node::Deduced)),
                _ => None,
            };
            let atomic =
                schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
            if fields.is_empty() && !atomic && matches!(rest.as_deref(), Some(Node::Deduced)) {
                return Node::Deduced;
            }
            Node::Object {
                fields,
                rest,
                atomic,
            }
        }
        Some("object") => Node::Object {
            fields: HashMap::new(),
            rest: None,
            atomic: schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"),
        },
        Some(_) => Node::Scalar,
        None => Node::Deduced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_list_and_map_types_from_openapi() {
        let s = &Schema::from_openapi_v3(&json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {
                    "ports": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "hosts": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                    "servers": {"type": "array", "items": {"type": "object"},
                        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "port"]},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                        "additionalProperties": {"type": "string"}}
                }},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        }))
        .root;
        let spec = s.field("spec").0;
        let (ports, declared) = spec.field("ports");
        assert!(declared);
        assert!(!ports.field("http").1, "map keys are not declared fields");
        assert_eq!(spec.field("hosts").0.list().0, &ListType::Set);
        assert_eq!(
            spec.field("servers").0.list().0,
            &ListType::keyed(&["name", "port"])
        );
        assert_eq!(spec.field("args").0.list().0, &ListType::Atomic);
        assert!(!spec.field("selector").0.granular_map());
        assert!(matches!(s.field("status").0, Node::Deduced));
        let meta = s.field("metadata").0;
        assert_eq!(meta.field("finalizers").0.list().0, &ListType::Set);
    }

    #[test]
    fn default_schema_keys_conditions_by_type_and_owner_references_by_uid() {
        let s = &Schema::default_object().root;
        assert_eq!(
            s.field("status").0.field("conditions").0.list().0,
            &ListType::keyed(&["type"])
        );
        assert_eq!(
            s.field("metadata").0.field("ownerReferences").0.list().0,
            &ListType::keyed(&["uid"])
        );
        assert_eq!(
            s.field("spec").0.field("ports").0.list().0,
            &ListType::Atomic
        );
        assert!(s.is_named_field("f:spec"));
        assert!(
            !s.field("metadata")
                .0
                .field("labels")
                .0
                .is_named_field("f:app")
        );
    }
}
