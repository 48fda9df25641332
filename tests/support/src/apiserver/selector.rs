//! Label selectors (equality and set-based) and the field selectors the server
//! supports (`metadata.name`, `metadata.namespace`, and Events' own).

use serde_json::Value;

use super::events;
use super::resources::Storage;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn check_key(k: &str) -> Result<String, String> {
    let k = k.trim();
    let valid = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if valid {
        Ok(k.to_string())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, found {rest:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(check_key(k)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEq(check_key(k)?, v.trim().to_string()));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(Requirement::Eq(check_key(k)?, v.trim().to_string()));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(Requirement::Eq(check_key(k)?, v.trim().to_string()));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim_start();
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(check_key(key)?, parse_set(set)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(check_key(key)?, parse_set(set)?));
    }
    if rest.is_empty() {
        return Ok(Requirement::Exists(check_key(key)?));
    }
    Err(format!("unable to parse requirement: {part:?}"))
}

/// A parsed `fieldSelector`: (label, equal, value), the label as the stored
/// object names it (an events.k8s.io `regarding.name` is the stored core
/// Event's `involvedObject.name`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The stored label of `label` on objects kept as `storage`, if supported.
fn label_of(storage: Storage, label: &str) -> Option<String> {
    if label == "metadata.name" || label == "metadata.namespace" {
        return Some(label.to_string());
    }
    match storage {
        Storage::Own => None,
        Storage::CoreEvents => events::field_label(false, label).map(str::to_string),
        Storage::EventsV1 => events::field_label(true, label).map(str::to_string),
    }
}

impl FieldSelector {
    pub fn parse(s: &str, storage: Storage) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            let label = label_of(storage, field)
                .ok_or_else(|| format!("field label not supported: {field}"))?;
            out.push((label, eq, value.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let actual = match field.as_str() {
                "metadata.name" => obj["metadata"]["name"].as_str().unwrap_or_default(),
                "metadata.namespace" => obj["metadata"]["namespace"].as_str().unwrap_or_default(),
                label => events::field_value(obj, label),
            };
            (actual == value) == *eq
        })
    }
}

/// Both selectors of a list or watch.
#[derive(Clone, Debug, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, obj: &Value) -> bool {
        self.fields.matches(obj) && self.labels.matches(obj["metadata"]["labels"].as_object())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn equality_and_set_based() {
        let l = labels(json!({"app": "web", "tier": "front", "env": "prod"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier=front"));
        assert!(!m("app=db"));
        assert!(m("app!=db"));
        assert!(!m("app!=web"));
        assert!(m("env in (prod, staging)"));
        assert!(!m("env in (dev)"));
        assert!(m("env notin (dev,qa)"));
        assert!(!m("env notin (prod)"));
        assert!(m("app"));
        assert!(!m("missing"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("app=web, env in (prod,x), !missing"));
        assert!(m("missing notin (a)"));
        assert!(!m("missing in (a)"));
        assert!(m("missing!=a"));
    }

    #[test]
    fn bad_selectors_are_errors() {
        assert!(LabelSelector::parse("app in prod").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(FieldSelector::parse("spec.x=1", Storage::Own).is_err());
        assert!(FieldSelector::parse("involvedObject.name=x", Storage::Own).is_err());
        assert!(FieldSelector::parse("source=x", Storage::EventsV1).is_err());
    }

    #[test]
    fn field_selector_on_name_and_namespace() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        let m = |s: &str| FieldSelector::parse(s, Storage::Own).unwrap().matches(&obj);
        assert!(m("metadata.name=a"));
        assert!(!m("metadata.name=b"));
        assert!(m("metadata.namespace==ns,metadata.name!=b"));
        assert!(!m("metadata.namespace!=ns"));
    }

    #[test]
    fn field_selectors_on_events_of_both_versions() {
        let core = json!({"metadata": {"name": "e", "namespace": "ns"},
            "involvedObject": {"kind": "ScalingGroupMirror", "name": "web", "uid": "u"},
            "source": {}, "reportingComponent": "meshmirror"});
        let m = |s: &str, st: Storage| FieldSelector::parse(s, st).unwrap().matches(&core);
        let describe =
            "involvedObject.name=web,involvedObject.kind=ScalingGroupMirror,involvedObject.uid=u";
        assert!(m(describe, Storage::CoreEvents));
        assert!(!m("involvedObject.uid=other", Storage::CoreEvents));
        assert!(m("source=meshmirror", Storage::CoreEvents));
        assert!(m(
            "regarding.name=web,reportingController=meshmirror",
            Storage::EventsV1
        ));
    }
}
