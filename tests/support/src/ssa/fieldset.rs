//! A set of field paths, shaped like the FieldsV1 tree it is stored as.
//!
//! Path elements are kept in their FieldsV1 spelling (`f:name`, `k:{"uid":"…"}`,
//! `v:"x"`, `i:0`) so that decoding, encoding and comparing need no parsing.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// One node of the set: whether the path itself is owned, and the owned paths
/// below it. Invariant: no child is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    pub(crate) member: bool,
    pub(crate) children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub(crate) fn child_mut(&mut self, pe: &str) -> &mut FieldSet {
        // Look up first: the common case (child exists) then allocates no key.
        if !self.children.contains_key(pe) {
            self.children.insert(pe.to_owned(), FieldSet::default());
        }
        self.children.get_mut(pe).expect("inserted above")
    }

    /// Inserts `path` (relative to this node) as a member.
    pub(crate) fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.child_mut(first).insert(rest),
        }
    }

    /// Drops empty children, bottom-up.
    pub(crate) fn compact(&mut self) {
        self.children.retain(|_, child| {
            child.compact();
            !child.is_empty()
        });
    }

    pub(crate) fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, theirs) in &other.children {
            self.child_mut(pe).union_with(theirs);
        }
    }

    /// The paths of `self` that are not members of `other` (not recursive:
    /// owning `.spec` does not remove `.spec.address`).
    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, mine) in &self.children {
            let child = match other.children.get(pe) {
                Some(theirs) => mine.difference(theirs),
                None => mine.clone(),
            };
            if !child.is_empty() {
                out.children.insert(pe.clone(), child);
            }
        }
        out
    }

    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, mine) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                let child = mine.intersection(theirs);
                if !child.is_empty() {
                    out.children.insert(pe.clone(), child);
                }
            }
        }
        out
    }

    /// The paths of `self` not equal to or below a member of `other`.
    pub(crate) fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        if other.member {
            return FieldSet::default();
        }
        let mut out = FieldSet {
            member: self.member,
            children: BTreeMap::new(),
        };
        for (pe, mine) in &self.children {
            let child = match other.children.get(pe) {
                Some(theirs) => mine.recursive_difference(theirs),
                None => mine.clone(),
            };
            if !child.is_empty() {
                out.children.insert(pe.clone(), child);
            }
        }
        out
    }

    /// Member paths in the order structured-merge-diff iterates them: at each
    /// level the members first, then the children.
    pub(crate) fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (pe, child) in &self.children {
            if child.member {
                let mut path = prefix.clone();
                path.push(pe.clone());
                out.push(path);
            }
        }
        for (pe, child) in &self.children {
            if !child.children.is_empty() {
                prefix.push(pe.clone());
                child.collect_paths(prefix, out);
                prefix.pop();
            }
        }
    }

    /// Parses a `fieldsV1` object. Unknown shapes are skipped rather than
    /// failing the write: the entry then simply owns less.
    pub(crate) fn from_fields_v1(value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(map) = value {
            for (key, child) in map {
                if key == "." {
                    set.member = true;
                    continue;
                }
                let mut node = FieldSet::from_fields_v1(child);
                // `{}` is a leaf: the path itself is owned.
                if node.children.is_empty() {
                    node.member = true;
                }
                set.children.insert(key.clone(), node);
            }
        }
        set
    }

    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        self.write_fields_v1(&mut map);
        Value::Object(map)
    }

    fn write_fields_v1(&self, map: &mut Map<String, Value>) {
        for (pe, child) in &self.children {
            let mut inner = Map::new();
            if child.member && !child.children.is_empty() {
                inner.insert(".".to_owned(), Value::Object(Map::new()));
            }
            child.write_fields_v1(&mut inner);
            map.insert(pe.clone(), Value::Object(inner));
        }
    }
}

/// `f:name`
pub(crate) fn field_pe(name: &str) -> String {
    let mut pe = String::with_capacity(name.len() + 2);
    pe.push_str("f:");
    pe.push_str(name);
    pe
}

/// A path as the API server prints it in conflicts: `.spec.address`,
/// `.metadata.ownerReferences[uid="u1"]`, `.metadata.finalizers[="x"]`.
pub(crate) fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for pe in path {
        if let Some(name) = pe.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = pe.strip_prefix("k:") {
            out.push('[');
            match serde_json::from_str::<Map<String, Value>>(key) {
                Ok(fields) => {
                    let parts: Vec<String> = fields
                        .iter()
                        .map(|(name, value)| format!("{name}={}", display_value(value)))
                        .collect();
                    out.push_str(&parts.join(","));
                }
                Err(_) => out.push_str(key),
            }
            out.push(']');
        } else if let Some(value) = pe.strip_prefix("v:") {
            out.push_str("[=");
            match serde_json::from_str::<Value>(value) {
                Ok(v) => out.push_str(&display_value(&v)),
                Err(_) => out.push_str(value),
            }
            out.push(']');
        } else if let Some(index) = pe.strip_prefix("i:") {
            out.push('[');
            out.push_str(index);
            out.push(']');
        } else {
            out.push_str(pe);
        }
    }
    out
}

/// Go's `value.ToString`: strings quoted, everything else as JSON.
fn display_value(value: &Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(elems: &[&str]) -> Vec<String> {
        elems.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn fields_v1_round_trip_keeps_dot_for_owned_maps_with_children() {
        let v1 = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:address": {}, "f:ports": {"f:http": {}}},
            "f:metadata2": {"f:ownerReferences": {"k:{\"uid\":\"u1\"}": {".": {}, "f:name": {}}}}
        });
        let set = FieldSet::from_fields_v1(&v1);
        assert!(set.children["f:metadata"].children["f:labels"].member);
        assert!(!set.children["f:spec"].member);
        assert_eq!(set.to_fields_v1(), v1);
    }

    #[test]
    fn difference_is_exact_not_recursive() {
        let mut a = FieldSet::default();
        a.insert(&path(&["f:spec"]));
        a.insert(&path(&["f:spec", "f:address"]));
        let mut b = FieldSet::default();
        b.insert(&path(&["f:spec"]));
        let d = a.difference(&b);
        assert!(!d.children["f:spec"].member);
        assert!(d.children["f:spec"].children["f:address"].member);
        assert!(a.difference(&a).is_empty());
        assert!(a.recursive_difference(&b).is_empty());
    }

    #[test]
    fn intersection_and_union() {
        let mut a = FieldSet::default();
        a.insert(&path(&["f:spec", "f:address"]));
        a.insert(&path(&["f:spec", "f:weight"]));
        let mut b = FieldSet::default();
        b.insert(&path(&["f:spec", "f:address"]));
        b.insert(&path(&["f:status"]));
        let i = a.intersection(&b);
        assert_eq!(i.paths(), vec![path(&["f:spec", "f:address"])]);
        let mut u = a.clone();
        u.union_with(&b);
        assert_eq!(u.paths().len(), 3);
    }

    #[test]
    fn paths_list_members_before_children() {
        let mut s = FieldSet::default();
        s.insert(&path(&["f:a", "f:b", "f:c"]));
        s.insert(&path(&["f:z"]));
        assert_eq!(
            s.paths(),
            vec![path(&["f:z"]), path(&["f:a", "f:b", "f:c"])]
        );
    }

    #[test]
    fn displays_paths_like_the_api_server() {
        assert_eq!(
            display_path(&path(&["f:spec", "f:address"])),
            ".spec.address"
        );
        assert_eq!(
            display_path(&path(&[
                "f:metadata",
                "f:ownerReferences",
                "k:{\"uid\":\"u1\"}"
            ])),
            ".metadata.ownerReferences[uid=\"u1\"]"
        );
        assert_eq!(
            display_path(&path(&["f:metadata", "f:finalizers", "v:\"x\""])),
            ".metadata.finalizers[=\"x\"]"
        );
    }
}
