//! Walks over JSON values guided by a [`Node`]: the field set a value
//! owns, merging a configuration into a live object, comparing two objects,
//! and removing fields a manager stopped applying. Each follows the
//! corresponding walker of structured-merge-diff (`typed/`).

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, field_pe};
use super::schema::{ListType, Node};

/// The FieldsV1 path elements of a granular list's items, or `None` when the
/// list must be handled as atomic: atomic type, or an item the key cannot be
/// taken from (missing key field without a default, not an object, duplicate
/// key).
fn item_pes(list: &[Value], list_type: &ListType) -> Option<Vec<String>> {
    let pes: Vec<String> = match list_type {
        ListType::Atomic => return None,
        ListType::Set => list
            .iter()
            .map(|item| match item {
                Value::Object(_) | Value::Array(_) => None,
                scalar => Some(format!("v:{scalar}")),
            })
            .collect::<Option<_>>()?,
        ListType::Map(keys, defaults) => list
            .iter()
            .map(|item| {
                let obj = item.as_object()?;
                let mut sorted: Vec<&String> = keys.iter().collect();
                sorted.sort();
                let mut key = Map::new();
                for name in sorted {
                    let value = obj.get(name).or_else(|| defaults.get(name))?;
                    key.insert(name.clone(), value.clone());
                }
                Some(format!("k:{}", Value::Object(key)))
            })
            .collect::<Option<_>>()?,
    };
    let mut seen = std::collections::HashSet::with_capacity(pes.len());
    if pes.iter().all(|pe| seen.insert(pe.as_str())) {
        Some(pes)
    } else {
        None
    }
}

/// The fields a configuration sets: leaves, list items, keys of free-form
/// maps, and atomic lists/maps as wholes (`ToFieldSet`).
pub(crate) fn to_field_set(value: &Value, schema: &Node) -> FieldSet {
    let mut set = FieldSet::default();
    collect(value, schema, &mut set);
    set.compact();
    set
}

fn collect(value: &Value, schema: &Node, node: &mut FieldSet) {
    match value {
        Value::Object(map) if schema.granular_map() => {
            for (key, child) in map {
                let (child_schema, declared) = schema.field(key);
                let child_node = node.child_mut(&field_pe(key));
                collect(child, child_schema, child_node);
                if !declared {
                    child_node.member = true;
                }
            }
        }
        Value::Array(list) => {
            let (list_type, items) = schema.list();
            match item_pes(list, list_type) {
                Some(pes) => {
                    for (item, pe) in list.iter().zip(pes) {
                        let child_node = node.child_mut(&pe);
                        collect(item, items, child_node);
                        child_node.member = true;
                    }
                }
                None => node.member = true,
            }
        }
        _ => node.member = true,
    }
}

/// `live` merged with `config`: maps key by key, keyed lists and sets item by
/// item (keeping the order structured-merge-diff produces), everything else
/// replaced by the configuration's value.
pub(crate) fn merge(live: &Value, config: &Value, schema: &Node) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(r)) if schema.granular_map() => {
            // Built key by key so that live subtrees the configuration
            // replaces are never copied.
            let mut out = Map::new();
            for (key, lv) in l {
                let merged = match r.get(key) {
                    Some(rv) => merge(lv, rv, schema.field(key).0),
                    None => lv.clone(),
                };
                out.insert(key.clone(), merged);
            }
            for (key, rv) in r {
                if !l.contains_key(key) {
                    out.insert(key.clone(), rv.clone());
                }
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(r)) => {
            let (list_type, items) = schema.list();
            match (item_pes(l, list_type), item_pes(r, list_type)) {
                (Some(lpes), Some(rpes)) => Value::Array(merge_list(l, &lpes, r, &rpes, items)),
                _ => config.clone(),
            }
        }
        _ => config.clone(),
    }
}

/// The list merge of structured-merge-diff's `mergingWalker.visitListItems`:
/// items only in `live` stay where they were, shared and new items follow the
/// configuration's order.
fn merge_list(
    l: &[Value],
    lpes: &[String],
    r: &[Value],
    rpes: &[String],
    items: &Node,
) -> Vec<Value> {
    use std::collections::HashMap;
    let lidx: HashMap<&str, usize> = lpes
        .iter()
        .enumerate()
        .map(|(i, pe)| (pe.as_str(), i))
        .collect();
    let ridx: HashMap<&str, usize> = rpes
        .iter()
        .enumerate()
        .map(|(i, pe)| (pe.as_str(), i))
        .collect();
    let mut shared = rpes.iter().filter(|pe| lidx.contains_key(pe.as_str()));
    let mut next_shared = shared.next();
    let item = |pe: &str, ri: usize| match lidx.get(pe) {
        Some(&li) => merge(&l[li], &r[ri], items),
        None => r[ri].clone(),
    };

    let mut out = Vec::with_capacity(l.len().max(r.len()));
    let (mut li, mut ri) = (0, 0);
    while li < l.len() || ri < r.len() {
        if li < l.len() && ri < r.len() {
            let pe = &lpes[li];
            if *pe == rpes[ri] {
                out.push(merge(&l[li], &r[ri], items));
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if ridx.contains_key(pe.as_str()) && next_shared.is_some_and(|n| n != pe) {
                // A shared item, but not the one due in this round.
                li += 1;
                continue;
            }
        }
        if li < l.len() && !ridx.contains_key(lpes[li].as_str()) {
            out.push(l[li].clone());
            li += 1;
            continue;
        }
        if ri < r.len() {
            let pe = &rpes[ri];
            out.push(item(pe, ri));
            ri += 1;
            if next_shared.is_some_and(|n| n == pe) {
                next_shared = shared.next();
            }
        } else {
            // Only shared live items remain; they were merged already.
            li += 1;
        }
    }
    out
}

/// What changed between two objects (`typed.Comparison`).
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub(crate) added: FieldSet,
    pub(crate) modified: FieldSet,
    pub(crate) removed: FieldSet,
}

impl Comparison {
    /// Drops the changes at or below `fields` (`Comparison.ExcludeFields`).
    pub(crate) fn exclude(&mut self, fields: &FieldSet) {
        self.added = self.added.recursive_difference(fields);
        self.modified = self.modified.recursive_difference(fields);
        self.removed = self.removed.recursive_difference(fields);
    }
}

pub(crate) fn compare(old: &Value, new: &Value, schema: &Node) -> Comparison {
    let mut c = Comparison::default();
    let mut path = Vec::new();
    compare_at(Some(old), Some(new), schema, &mut path, &mut c);
    c.added.compact();
    c.modified.compact();
    c.removed.compact();
    c
}

/// How a value is walked: key by key, item by item, or as a leaf.
enum Shape<'a> {
    Map(&'a Map<String, Value>),
    List(&'a [Value], Vec<String>),
    Leaf,
}

fn shape<'a>(value: &'a Value, schema: &Node) -> Shape<'a> {
    match value {
        Value::Object(map) if schema.granular_map() && !map.is_empty() => Shape::Map(map),
        Value::Array(list) if !list.is_empty() => match item_pes(list, schema.list().0) {
            Some(pes) => Shape::List(list, pes),
            None => Shape::Leaf,
        },
        _ => Shape::Leaf,
    }
}

fn compare_at(
    old: Option<&Value>,
    new: Option<&Value>,
    schema: &Node,
    path: &mut Vec<String>,
    c: &mut Comparison,
) {
    let old_shape = old.map(|v| shape(v, schema));
    let new_shape = new.map(|v| shape(v, schema));
    let granular = |s: &Option<Shape<'_>>| matches!(s, Some(Shape::Map(_) | Shape::List(..)));
    let same_kind = match (&old_shape, &new_shape) {
        (Some(Shape::Map(_)), Some(Shape::Map(_)))
        | (Some(Shape::List(..)), Some(Shape::List(..))) => true,
        (Some(_), Some(_)) => false,
        _ => true,
    };
    if !granular(&old_shape) && !granular(&new_shape) {
        // A leaf: a scalar, an atomic list or map, or an empty one.
        match (old, new) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            (Some(o), Some(n)) if o != n => c.modified.insert(path),
            _ => {}
        }
        return;
    }
    if !same_kind {
        // The value changed shape (say a map became a string): the path is
        // modified, and what was below it went or came.
        c.modified.insert(path);
        compare_children(old_shape, None, schema, path, c);
        compare_children(None, new_shape, schema, path, c);
        return;
    }
    compare_children(old_shape, new_shape, schema, path, c);
    if old.is_none() {
        c.added.insert(path);
    } else if new.is_none() {
        c.removed.insert(path);
    }
}

fn compare_children<'a>(
    old: Option<Shape<'a>>,
    new: Option<Shape<'a>>,
    schema: &Node,
    path: &mut Vec<String>,
    c: &mut Comparison,
) {
    fn as_map<'a>(s: &Option<Shape<'a>>) -> Option<&'a Map<String, Value>> {
        match s {
            Some(Shape::Map(m)) => Some(m),
            _ => None,
        }
    }
    let (om, nm) = (as_map(&old), as_map(&new));
    if om.is_some() || nm.is_some() {
        let mut seen = std::collections::HashSet::new();
        for key in om.into_iter().chain(nm).flat_map(|m| m.keys()) {
            if !seen.insert(key) {
                continue;
            }
            path.push(field_pe(key));
            compare_at(
                om.and_then(|m| m.get(key)),
                nm.and_then(|m| m.get(key)),
                schema.field(key).0,
                path,
                c,
            );
            path.pop();
        }
        return;
    }
    fn as_list<'a>(s: Option<Shape<'a>>) -> Option<(&'a [Value], Vec<String>)> {
        match s {
            Some(Shape::List(list, pes)) => Some((list, pes)),
            _ => None,
        }
    }
    fn find<'a>(side: &Option<(&'a [Value], Vec<String>)>, pe: &str) -> Option<&'a Value> {
        let (list, pes) = side.as_ref()?;
        pes.iter().position(|p| p == pe).map(|i| &list[i])
    }
    let (ol, nl) = (as_list(old), as_list(new));
    let items = schema.list().1;
    let mut all: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, pes) in ol.iter().chain(nl.iter()) {
        for pe in pes {
            if seen.insert(pe.as_str()) {
                all.push(pe.clone());
            }
        }
    }
    for pe in all {
        let (o, n) = (find(&ol, &pe), find(&nl, &pe));
        path.push(pe);
        compare_at(o, n, items, path, c);
        path.pop();
    }
}

/// Adds as members the declared fields that have owned children
/// (`EnsureNamedFieldsAreMembers`): owning `.spec.address` also means owning
/// `.spec`, but owning `.metadata.labels.app` does not own a label map key.
pub(crate) fn ensure_named_fields_are_members(set: &FieldSet, schema: &Node) -> FieldSet {
    let mut out = FieldSet {
        member: set.member,
        children: Default::default(),
    };
    for (pe, child) in &set.children {
        let mut node = ensure_named_fields_are_members(child, schema.child(pe));
        if schema.is_named_field(pe) {
            node.member = true;
        }
        out.children.insert(pe.clone(), node);
    }
    out
}

/// Removes from `value` what the applier owned last time (`last`) and nobody
/// owns now (`owned`), both with named fields made members. Equivalent to
/// structured-merge-diff's prune, addBackOwnedItems and addBackDanglingItems.
pub(crate) fn prune(value: &mut Value, schema: &Node, last: &FieldSet, owned: Option<&FieldSet>) {
    for (pe, last_child) in &last.children {
        let owned_child = owned.and_then(|o| o.children.get(pe));
        let still_owned = owned_child.is_some_and(|o| o.member);
        if last_child.member && !still_owned {
            remove_child(value, schema, pe);
        } else if !last_child.children.is_empty()
            && let Some(child) = child_mut(value, schema, pe)
        {
            prune(child, schema.child(pe), last_child, owned_child);
        }
    }
}

fn remove_child(value: &mut Value, schema: &Node, pe: &str) {
    match value {
        Value::Object(map) => {
            if let Some(key) = pe.strip_prefix("f:") {
                map.remove(key);
            }
        }
        Value::Array(list) => {
            if let Some(pes) = item_pes(list, schema.list().0)
                && let Some(i) = pes.iter().position(|p| p == pe)
            {
                list.remove(i);
            }
        }
        _ => {}
    }
}

fn child_mut<'a>(value: &'a mut Value, schema: &Node, pe: &str) -> Option<&'a mut Value> {
    match value {
        Value::Object(map) => map.get_mut(pe.strip_prefix("f:")?),
        Value::Array(list) => {
            let i = item_pes(list, schema.list().0)?
                .iter()
                .position(|p| p == pe)?;
            list.get_mut(i)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::Schema;
    use super::*;
    use serde_json::json;

    fn paths(set: &FieldSet) -> Vec<String> {
        set.paths()
            .iter()
            .map(|p| super::super::fieldset::display_path(p))
            .collect()
    }

    #[test]
    fn field_set_owns_leaves_items_and_map_keys() {
        let v = json!({
            "metadata": {"name": "a", "labels": {"app": "x"},
                "ownerReferences": [{"uid": "u1", "kind": "K"}], "finalizers": ["f1"]},
            "spec": {"address": "1.2.3.4", "ports": {"http": 80}, "hosts": ["a", "b"]}
        });
        let set = to_field_set(&v, &Schema::default_object().root);
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {
                    "f:name": {},
                    "f:labels": {"f:app": {}},
                    // An owner reference is atomic: owned as one element.
                    "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}},
                    "f:finalizers": {"v:\"f1\"": {}}
                },
                "f:spec": {"f:address": {}, "f:ports": {"f:http": {}}, "f:hosts": {}}
            })
        );
    }

    #[test]
    fn merge_keeps_live_only_list_items_in_place() {
        let s = Node::List {
            list_type: ListType::keyed(&["uid"]),
            items: Box::new(Node::Loose),
        };
        let live = json!([{"uid": "a", "n": 1}, {"uid": "b"}, {"uid": "c"}]);
        let config = json!([{"uid": "c", "n": 3}, {"uid": "a", "n": 2}, {"uid": "d"}]);
        let merged = merge(&live, &config, &s);
        let uids: Vec<&str> = merged
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["uid"].as_str().unwrap())
            .collect();
        assert_eq!(uids, ["b", "c", "a", "d"]);
        assert_eq!(merged[2]["n"], 2);
        assert_eq!(merged[1]["n"], 3);
    }

    #[test]
    fn compare_marks_new_maps_as_added_nodes() {
        let old = json!({"metadata": {"name": "a"}});
        let new = json!({"metadata": {"name": "a", "annotations": {"k": "v"}}, "spec": {"x": 1}});
        let c = compare(&old, &new, &Schema::default_object().root);
        assert_eq!(
            paths(&c.added),
            [
                ".spec",
                ".metadata.annotations",
                ".metadata.annotations.k",
                ".spec.x"
            ]
        );
        assert!(c.modified.is_empty() && c.removed.is_empty());
        let back = compare(&new, &old, &Schema::default_object().root);
        assert_eq!(paths(&back.removed).len(), 4);
    }

    #[test]
    fn compare_treats_atomic_lists_as_one_leaf() {
        let old = json!({"spec": {"hosts": ["a"]}});
        let new = json!({"spec": {"hosts": ["a", "b"]}});
        let c = compare(&old, &new, &Schema::default_object().root);
        assert_eq!(paths(&c.modified), [".spec.hosts"]);
    }

    #[test]
    fn prune_removes_only_unowned_paths() {
        let s = &Schema::default_object().root;
        let mut v = json!({"spec": {"a": 1, "b": 2, "c": 3}});
        let last = to_field_set(&json!({"spec": {"a": 1, "b": 2}}), s);
        let owned = to_field_set(&json!({"spec": {"b": 2}}), s);
        prune(
            &mut v,
            s,
            &ensure_named_fields_are_members(&last, s),
            Some(&ensure_named_fields_are_members(&owned, s)),
        );
        assert_eq!(v, json!({"spec": {"b": 2, "c": 3}}));
    }
}
