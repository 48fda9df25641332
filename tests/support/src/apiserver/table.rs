//! Server-side `Table` output (what `kubectl get` asks for), from a CRD
//! version's additionalPrinterColumns.

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use super::resources::{ResourceDef, VersionDef};

/// Whether the client asked for `as=Table`.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

/// `includeObject` of the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

struct Column {
    name: String,
    type_: String,
    format: String,
    description: String,
    priority: i64,
    /// None for the name column.
    path: Option<String>,
}

fn columns(res: &ResourceDef, ver: &VersionDef) -> Vec<Column> {
    let mut cols = vec![Column {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: "Name must be unique within a namespace.".into(),
        priority: 0,
        path: None,
    }];
    if ver.columns.is_empty() {
        if res.group.is_empty() && res.plural == "namespaces" {
            cols.push(Column {
                name: "Status".into(),
                type_: "string".into(),
                format: String::new(),
                description: "The status of the namespace".into(),
                priority: 0,
                path: Some(".status.phase".into()),
            });
        }
        cols.push(Column {
            name: "Age".into(),
            type_: "date".into(),
            format: String::new(),
            description: "Creation time".into(),
            priority: 0,
            path: Some(".metadata.creationTimestamp".into()),
        });
    } else {
        cols.extend(ver.columns.iter().map(|c| Column {
            name: c.name.clone(),
            type_: c.type_.clone(),
            format: c.format.clone(),
            description: c.description.clone(),
            priority: c.priority,
            path: Some(c.json_path.clone()),
        }));
    }
    cols
}

/// Evaluates the simple JSONPath of printer columns: `.a.b`, `.a[0].b`.
fn eval<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path.trim_start_matches('.').split('.') {
        if part.is_empty() {
            continue;
        }
        let (field, idx) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = idx {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

fn human_age(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn cell(obj: &Value, col: &Column) -> Value {
    let Some(path) = &col.path else {
        return obj["metadata"]["name"].clone();
    };
    match (eval(obj, path), col.type_.as_str()) {
        (None, _) => Value::Null,
        (Some(Value::String(s)), "date") => json!(human_age(s)),
        (Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))), _) => v.clone(),
        (Some(Value::Null), _) => Value::Null,
        (Some(v), _) => json!(v.to_string()),
    }
}

fn row(obj: &Value, cols: &[Column], include: Include) -> Value {
    let cells: Vec<Value> = cols.iter().map(|c| cell(obj, c)).collect();
    let mut row = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Object => row["object"] = obj.clone(),
        Include::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            })
        }
    }
    row
}

/// A Table of `objs` (already in the requested version).
pub fn table<'a>(
    res: &ResourceDef,
    ver: &VersionDef,
    objs: impl IntoIterator<Item = &'a Value>,
    list_meta: Value,
    include: Include,
    with_columns: bool,
) -> Value {
    let cols = columns(res, ver);
    let rows: Vec<Value> = objs.into_iter().map(|o| row(o, &cols, include)).collect();
    let defs: Vec<Value> = if with_columns {
        cols.iter()
            .map(|c| {
                json!({
                    "name": c.name, "type": c.type_, "format": c.format,
                    "description": c.description, "priority": c.priority,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::parse_crds;

    #[test]
    fn printer_columns_from_crd() {
        let crds = parse_crds(include_str!("../../fixtures/workloadentry-crd.yaml")).unwrap();
        let res = &crds[0];
        let obj = json!({"metadata": {"name": "we1", "creationTimestamp": "2020-01-01T00:00:00Z"}, "spec": {"address": "10.0.0.1"}});
        let t = table(
            res,
            &res.versions[0],
            [&obj],
            json!({}),
            Include::None,
            true,
        );
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["columnDefinitions"][2]["name"], "Address");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "we1");
        assert!(cells[1].as_str().unwrap().ends_with('d'));
        assert_eq!(cells[2], "10.0.0.1");
        assert!(t["rows"][0].get("object").is_none());
    }

    #[test]
    fn jsonpath_with_index() {
        let o = json!({"a": {"b": [{"c": 1}, {"c": 2}]}});
        assert_eq!(eval(&o, ".a.b[1].c"), Some(&json!(2)));
        assert_eq!(eval(&o, ".a.x"), None);
    }
}
