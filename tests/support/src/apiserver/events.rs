//! Events as the real server keeps them: core v1 and events.k8s.io/v1 Events
//! share one storage, in the core v1 shape, and each is converted to the
//! other on the way in and out (Kubernetes' pkg/apis/events/v1/conversion.go:
//! `regarding` ↔ `involvedObject`, `note` ↔ `message`, `deprecatedSource` ↔
//! `source`, `reportingController` ↔ `reportingComponent`, ...). Also the
//! field selectors Events support and the Table `kubectl get events` shows.

use serde_json::{Map, Value, json};

use super::table;

/// How a field is written when the Go type encodes it to JSON.
#[derive(Clone, Copy)]
enum Rule {
    /// `omitempty` on a string, number or pointer: left out when unset or zero.
    OmitEmpty,
    /// A struct (never left out): `{}` when unset.
    Struct,
    /// A `metav1.Time` or `MicroTime` (never left out): `null` when unset.
    Time,
    /// A string without `omitempty`: `""` when unset.
    Str,
}

/// (core v1 name, its rule, events.k8s.io/v1 name, its rule), in the order of
/// the core v1 type.
const FIELDS: [(&str, Rule, &str, Rule); 14] = [
    ("involvedObject", Rule::Struct, "regarding", Rule::Struct),
    ("reason", Rule::OmitEmpty, "reason", Rule::OmitEmpty),
    ("message", Rule::OmitEmpty, "note", Rule::OmitEmpty),
    ("source", Rule::Struct, "deprecatedSource", Rule::Struct),
    (
        "firstTimestamp",
        Rule::Time,
        "deprecatedFirstTimestamp",
        Rule::Time,
    ),
    (
        "lastTimestamp",
        Rule::Time,
        "deprecatedLastTimestamp",
        Rule::Time,
    ),
    ("count", Rule::OmitEmpty, "deprecatedCount", Rule::OmitEmpty),
    ("type", Rule::OmitEmpty, "type", Rule::OmitEmpty),
    ("eventTime", Rule::Time, "eventTime", Rule::Time),
    ("series", Rule::OmitEmpty, "series", Rule::OmitEmpty),
    ("action", Rule::OmitEmpty, "action", Rule::OmitEmpty),
    ("related", Rule::OmitEmpty, "related", Rule::OmitEmpty),
    (
        "reportingComponent",
        Rule::Str,
        "reportingController",
        Rule::OmitEmpty,
    ),
    (
        "reportingInstance",
        Rule::Str,
        "reportingInstance",
        Rule::OmitEmpty,
    ),
];

fn put(out: &mut Map<String, Value>, name: &str, rule: Rule, value: Option<&Value>) {
    let value = value.filter(|v| !v.is_null());
    let empty = match value {
        None => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(_) => false,
    };
    let written = match (rule, value) {
        (Rule::OmitEmpty, _) if empty => return,
        (Rule::Struct, Some(v)) if v.is_object() => v.clone(),
        (Rule::Struct, _) => json!({}),
        (Rule::Time, Some(v)) => v.clone(),
        (Rule::Time, None) => Value::Null,
        (Rule::Str, None) => json!(""),
        (_, Some(v)) => v.clone(),
        (Rule::OmitEmpty, None) => return,
    };
    out.insert(name.to_string(), written);
}

/// Rebuilds an Event field by field (fields of neither type are dropped, as
/// decoding into the Go type drops them).
fn build(src: &Value, from_core: bool, to_core: bool) -> Value {
    let mut out = Map::new();
    out.insert(
        "apiVersion".into(),
        json!(if to_core { "v1" } else { "events.k8s.io/v1" }),
    );
    out.insert("kind".into(), json!("Event"));
    out.insert(
        "metadata".into(),
        src.get("metadata").cloned().unwrap_or_else(|| json!({})),
    );
    for (core, core_rule, v1, v1_rule) in FIELDS {
        let value = src.get(if from_core { core } else { v1 });
        let (name, rule) = if to_core {
            (core, core_rule)
        } else {
            (v1, v1_rule)
        };
        put(&mut out, name, rule, value);
    }
    Value::Object(out)
}

/// A core v1 Event in the shape the real server stores and answers.
pub fn core_typed(core: &Value) -> Value {
    build(core, true, true)
}

/// An events.k8s.io/v1 Event as core v1.
pub fn core_from_v1(v1: &Value) -> Value {
    build(v1, false, true)
}

/// A core v1 Event as events.k8s.io/v1.
pub fn v1_from_core(core: &Value) -> Value {
    build(core, true, false)
}

/// The field selector labels of core v1 Events (besides `metadata.name` and
/// `metadata.namespace`).
const CORE_LABELS: [&str; 11] = [
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The core v1 label a field selector label stands for, or None when the
/// real server refuses it (`field label not supported`). events.k8s.io/v1
/// names its labels after its own fields and has no `source`.
pub fn field_label(v1: bool, label: &str) -> Option<&'static str> {
    if !v1 {
        return CORE_LABELS.into_iter().find(|l| *l == label);
    }
    let core = match label {
        "reportingController" => "reportingComponent",
        "reason" | "type" => label,
        _ => {
            let field = label.strip_prefix("regarding.")?;
            return CORE_LABELS
                .into_iter()
                .find(|l| l.strip_prefix("involvedObject.") == Some(field));
        }
    };
    CORE_LABELS.into_iter().find(|l| *l == core)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

/// The value of a core v1 label on a stored (core v1) Event. `source` is the
/// source's component, else the reporting controller.
pub fn field_value<'a>(core: &'a Value, label: &str) -> &'a str {
    if label == "source" {
        let component = text(core, &["source", "component"]);
        if component.is_empty() {
            return text(core, &["reportingComponent"]);
        }
        return component;
    }
    match label.split_once('.') {
        Some((object, field)) => text(core, &[object, field]),
        None => text(core, &[label]),
    }
}

/// The columns of the real server's Event table (printers.go), all of them,
/// as a server-side Table carries them.
pub fn columns() -> Value {
    let col = |name: &str, priority: u8, description: &str| {
        json!({
            "name": name, "type": "string", "format": if name == "Name" { "name" } else { "" },
            "description": description, "priority": priority,
        })
    };
    json!([
        col(
            "Last Seen",
            0,
            "The time at which the most recent occurrence of this event was recorded."
        ),
        col(
            "Type",
            0,
            "Type of this event (Normal, Warning), new types could be added in the future"
        ),
        col(
            "Reason",
            0,
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."
        ),
        col("Object", 0, "The object that this event is about."),
        col(
            "Subobject",
            1,
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object."
        ),
        col(
            "Source",
            1,
            "The component reporting this event. Should be a short machine understandable string."
        ),
        col(
            "Message",
            0,
            "A human-readable description of the status of this operation."
        ),
        col(
            "First Seen",
            1,
            "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"
        ),
        col("Count", 1, "The number of times this event has occurred."),
        col(
            "Name",
            1,
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
        ),
    ])
}

/// How long ago `ts` was, as the real printer says it (`<unknown>` unset).
fn since(ts: &Value) -> String {
    match ts.as_str() {
        Some(s) if !s.is_empty() => table::human_age(s),
        _ => "<unknown>".into(),
    }
}

fn or<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

/// One row's cells, from a core v1 Event (the real printEvent, wide).
pub fn cells(core: &Value) -> Vec<Value> {
    let set = |k: &str| core[k].as_str().is_some_and(|s| !s.is_empty());
    let first = if set("firstTimestamp") {
        since(&core["firstTimestamp"])
    } else {
        since(&core["eventTime"])
    };
    let mut last = if set("lastTimestamp") {
        since(&core["lastTimestamp"])
    } else {
        first.clone()
    };
    let mut count = core["count"].as_i64().unwrap_or(0);
    if core["series"].is_object() {
        last = since(&core["series"]["lastObservedTime"]);
        count = core["series"]["count"].as_i64().unwrap_or(0);
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }
    let kind = text(core, &["involvedObject", "kind"]).to_lowercase();
    let name = text(core, &["involvedObject", "name"]);
    let target = if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    };
    let component = or(
        text(core, &["source", "component"]),
        text(core, &["reportingComponent"]),
    );
    let instance = or(
        text(core, &["source", "host"]),
        text(core, &["reportingInstance"]),
    );
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(text(core, &["type"])),
        json!(text(core, &["reason"])),
        json!(target),
        json!(text(core, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(text(core, &["message"]).trim()),
        json!(first),
        json!(count),
        json!(text(core, &["metadata", "name"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> Value {
        // What kube's Recorder writes (events.k8s.io/v1).
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "demo"},
            "action": "Reconcile", "reason": "Synced", "note": "3 entries",
            "eventTime": "2026-01-01T00:00:00.123456Z",
            "regarding": {"kind": "ScalingGroupMirror", "name": "web", "namespace": "demo", "uid": "u-1"},
            "reportingController": "meshmirror", "reportingInstance": "meshmirror-abc",
            "type": "Normal",
        })
    }

    #[test]
    fn events_v1_as_core_as_the_real_server_answers() {
        let core = core_from_v1(&recorded());
        assert_eq!(
            core,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "web.1", "namespace": "demo"},
                "involvedObject": {"kind": "ScalingGroupMirror", "name": "web", "namespace": "demo", "uid": "u-1"},
                "reason": "Synced", "message": "3 entries", "source": {},
                "firstTimestamp": null, "lastTimestamp": null, "type": "Normal",
                "eventTime": "2026-01-01T00:00:00.123456Z", "action": "Reconcile",
                "reportingComponent": "meshmirror", "reportingInstance": "meshmirror-abc",
            })
        );
        let back = v1_from_core(&core);
        let mut want = recorded();
        want["deprecatedSource"] = json!({});
        want["deprecatedFirstTimestamp"] = Value::Null;
        want["deprecatedLastTimestamp"] = Value::Null;
        assert_eq!(back, want);
    }

    #[test]
    fn core_fields_map_to_deprecated_ones() {
        let core = core_typed(&json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "m",
            "source": {"component": "kubelet", "host": "n1"}, "count": 3,
            "firstTimestamp": "2026-01-01T00:00:00Z", "bogus": 1,
        }));
        assert!(core.get("bogus").is_none());
        assert_eq!(core["reportingComponent"], "");
        let v1 = v1_from_core(&core);
        assert_eq!(v1["regarding"]["kind"], "Pod");
        assert_eq!(v1["note"], "m");
        assert_eq!(v1["deprecatedSource"]["host"], "n1");
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["deprecatedFirstTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(v1["eventTime"], Value::Null);
        assert!(v1.get("reportingController").is_none());
    }

    #[test]
    fn field_labels_of_both_versions() {
        assert_eq!(
            field_label(false, "involvedObject.uid"),
            Some("involvedObject.uid")
        );
        assert_eq!(field_label(false, "message"), None);
        assert_eq!(
            field_label(true, "regarding.name"),
            Some("involvedObject.name")
        );
        assert_eq!(
            field_label(true, "reportingController"),
            Some("reportingComponent")
        );
        assert_eq!(field_label(true, "source"), None);
        let core = core_from_v1(&recorded());
        assert_eq!(
            field_value(&core, "involvedObject.kind"),
            "ScalingGroupMirror"
        );
        assert_eq!(field_value(&core, "source"), "meshmirror");
        assert_eq!(field_value(&core, "type"), "Normal");
    }

    #[test]
    fn table_cells_like_kubectl_get_events() {
        let mut v1 = recorded();
        v1["series"] = json!({"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"});
        let c = cells(&core_from_v1(&v1));
        assert_eq!(
            c[1..7],
            [
                json!("Normal"),
                json!("Synced"),
                json!("scalinggroupmirror/web"),
                json!(""),
                json!("meshmirror, meshmirror-abc"),
                json!("3 entries")
            ]
        );
        assert_eq!(c[8], 2);
        assert_eq!(c[9], "web.1");
        let single = cells(&core_from_v1(&recorded()));
        assert_eq!(single[8], 1, "a singleton counts 1");
        assert_eq!(single[0], single[7], "last seen is first seen");
        assert_eq!(columns().as_array().unwrap().len(), c.len());
    }
}
