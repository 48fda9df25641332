//! What the server itself sets on objects: uid, timestamps, generation, status
//! handling for the status subresource, and the checks on metadata it makes.

use std::sync::OnceLock;

use rand::Rng;
use regex::Regex;
use serde_json::{Map, Value, json};

use super::resources::ResourceDef;
use super::status::Cause;

/// Server time, RFC 3339 to the second (as metadata timestamps are).
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn new_uid() -> String {
    let b: [u8; 16] = rand::rng().random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    )
}

/// `generateName` plus five characters from the real server's alphabet.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let max = 63 - 5;
    let prefix = if prefix.len() > max {
        &prefix[..max]
    } else {
        prefix
    };
    format!("{prefix}{suffix}")
}

pub fn meta(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

fn remove(obj: &mut Value, key: &str) {
    if let Some(m) = obj.as_object_mut() {
        m.remove(key);
    }
}

const SYSTEM_FIELDS: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "resourceVersion",
];

/// A new object: system metadata set, status dropped where a status subresource
/// owns it (as the real server does on create).
pub fn prepare_create(obj: &mut Value, status_subresource: bool, now: &str) {
    let m = meta(obj);
    for f in SYSTEM_FIELDS {
        m.remove(f);
    }
    m.remove("selfLink");
    m.insert("uid".into(), json!(new_uid()));
    m.insert("creationTimestamp".into(), json!(now));
    m.insert("generation".into(), json!(1));
    if status_subresource {
        remove(obj, "status");
    }
}

/// The parts of an object whose change bumps `generation`.
fn spec_part(obj: &Value, ignore_status: bool) -> Map<String, Value> {
    let mut m = obj.as_object().cloned().unwrap_or_default();
    m.remove("metadata");
    m.remove("apiVersion");
    m.remove("kind");
    if ignore_status {
        m.remove("status");
    }
    m
}

/// An update of the main resource: system metadata from `live`, status from
/// `live` where a status subresource owns it, generation bumped when anything
/// but metadata (and status) changed.
pub fn prepare_update(live: &Value, new: &mut Value, status_subresource: bool) {
    let lm = live["metadata"].clone();
    let m = meta(new);
    for f in SYSTEM_FIELDS {
        match lm.get(f) {
            Some(v) => m.insert(f.into(), v.clone()),
            None => m.remove(f),
        };
    }
    for f in ["name", "namespace"] {
        if let Some(v) = lm.get(f) {
            m.insert(f.into(), v.clone());
        }
    }
    if status_subresource {
        match live.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => remove(new, "status"),
        }
    }
    let generation = live["metadata"]["generation"].as_i64().unwrap_or(1);
    let bumped = spec_part(live, status_subresource) != spec_part(new, status_subresource);
    new["metadata"]["generation"] = json!(if bumped { generation + 1 } else { generation });
}

/// An update through `/status`: everything from `live` but `status` (and the
/// managedFields the write produced).
pub fn prepare_status_update(live: &Value, new: &Value) -> Value {
    let mut out = live.clone();
    match new.get("status") {
        Some(s) => out["status"] = s.clone(),
        None => remove(&mut out, "status"),
    }
    match new["metadata"].get("managedFields") {
        Some(mf) => out["metadata"]["managedFields"] = mf.clone(),
        None => {
            meta(&mut out).remove("managedFields");
        }
    }
    out
}

/// ObjectMeta's maps and lists are `omitempty` in the real server, which
/// decodes every object's metadata into it: an empty or null `labels`,
/// `annotations`, `finalizers` or `ownerReferences` is not stored (nor
/// recorded in managedFields).
pub fn drop_empty_metadata(obj: &mut Value) {
    let m = meta(obj);
    for k in ["labels", "annotations", "finalizers", "ownerReferences"] {
        let empty = match m.get(k) {
            Some(Value::Null) => true,
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if empty {
            m.remove(k);
        }
    }
}

/// The label the real server's defaulting puts on every Namespace written
/// (before managedFields are recorded: the writer owns it).
pub fn namespace_label(ns: &mut Value) {
    let name = ns["metadata"]["name"].clone();
    let m = meta(ns);
    let labels = m.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["kubernetes.io/metadata.name"] = name;
}

/// What the real Namespace strategy sets on create, after managedFields are
/// recorded (nobody owns them): the `kubernetes` finalizer, phase Active.
pub fn namespace_create_defaults(ns: &mut Value) {
    if !ns["spec"].is_object() {
        ns["spec"] = json!({});
    }
    let fins = &mut ns["spec"]["finalizers"];
    if !fins.is_array() {
        *fins = json!([]);
    }
    if let Some(list) = fins.as_array_mut()
        && !list.iter().any(|f| f == "kubernetes")
    {
        list.push(json!("kubernetes"));
    }
    ns["status"] = json!({"phase": "Active"});
}

fn subdomain() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .expect("valid regex")
    })
}

fn label() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("valid regex"))
}

/// What the real server says of a string that is not a DNS-1123 label (at
/// most 63 characters).
pub fn label_problem(s: &str) -> Option<&'static str> {
    (s.len() > 63 || !label().is_match(s)).then_some(
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    )
}

/// The name checks of the real server: a DNS-1123 subdomain (a DNS-1123 label
/// for namespaces).
pub fn validate_name(res: &ResourceDef, name: &str) -> Vec<Cause> {
    let invalid = |msg: &str| Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: \"{name}\": {msg}"),
        field: "metadata.name".into(),
    };
    if res.group.is_empty() && res.plural == "namespaces" {
        if let Some(problem) = label_problem(name) {
            return vec![invalid(problem)];
        }
    } else if name.len() > 253 || !subdomain().is_match(name) {
        return vec![invalid(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )];
    }
    Vec::new()
}

/// A terminating object cannot gain finalizers. The real server checks
/// object metadata twice on update (generic and per-kind validation), so the
/// cause comes twice; the message names the new ones, sorted, in Go syntax.
pub fn validate_finalizers(live: &Value, new: &Value) -> Vec<Cause> {
    if !live["metadata"]["deletionTimestamp"].is_string() {
        return Vec::new();
    }
    let old: Vec<&Value> = live["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let added: std::collections::BTreeSet<String> = new["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| !old.contains(f))
        .map(|f| format!("{:?}", f.as_str().unwrap_or_default()))
        .collect();
    if added.is_empty() {
        return Vec::new();
    }
    let cause = Cause {
        reason: "FieldValueForbidden".into(),
        message: format!(
            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
            added.into_iter().collect::<Vec<_>>().join(", ")
        ),
        field: "metadata.finalizers".into(),
    };
    vec![cause.clone(), cause]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_moves_only_with_spec() {
        let mut live = json!({"metadata": {"name": "a", "generation": 3, "uid": "u"}, "spec": {"x": 1}, "status": {"s": 1}});
        let mut new = json!({"metadata": {"name": "a", "labels": {"l": "v"}}, "spec": {"x": 1}, "status": {"s": 2}});
        prepare_update(&live, &mut new, true);
        assert_eq!(new["metadata"]["generation"], 3);
        assert_eq!(new["status"]["s"], 1, "status comes from live");
        assert_eq!(new["metadata"]["uid"], "u");
        let mut new2 = json!({"metadata": {"name": "a"}, "spec": {"x": 2}});
        prepare_update(&live, &mut new2, true);
        assert_eq!(new2["metadata"]["generation"], 4);
        live["metadata"]["generation"] = json!(1);
        let mut new3 = json!({"metadata": {"name": "a"}, "spec": {"x": 1}, "status": {"s": 9}});
        prepare_update(&live, &mut new3, false);
        assert_eq!(
            new3["metadata"]["generation"], 2,
            "without subresource status is spec"
        );
    }

    #[test]
    fn status_update_keeps_everything_else() {
        let live = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"x": 1}});
        let new = json!({"metadata": {"name": "a", "labels": {"x": "2"}, "managedFields": [1]}, "spec": {"x": 2}, "status": {"ok": true}});
        let out = prepare_status_update(&live, &new);
        assert_eq!(out["spec"]["x"], 1);
        assert_eq!(out["metadata"]["labels"]["x"], "1");
        assert_eq!(out["status"]["ok"], true);
        assert_eq!(out["metadata"]["managedFields"], json!([1]));
    }

    #[test]
    fn create_sets_system_fields_and_drops_status() {
        let mut o = json!({"metadata": {"name": "a", "uid": "client", "resourceVersion": "5"}, "status": {}});
        prepare_create(&mut o, true, "T");
        assert_ne!(o["metadata"]["uid"], "client");
        assert_eq!(o["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert!(o["metadata"].get("resourceVersion").is_none());
        assert!(o.get("status").is_none());
        assert_eq!(o["metadata"]["creationTimestamp"], "T");
    }

    #[test]
    fn names() {
        let res = ResourceDef::test_def();
        assert!(validate_name(&res, "a.b-c").is_empty());
        assert_eq!(validate_name(&res, "A_b").len(), 1);
        let g = generate_name("web-");
        assert!(g.starts_with("web-") && g.len() == 9);
    }
}
