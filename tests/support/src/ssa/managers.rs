//! `metadata.managedFields` entries: decoding, identity, encoding and the
//! way the API server names a manager in conflict messages.

use chrono::DateTime;
use serde_json::{Map, Value};

use super::fieldset::FieldSet;

pub(crate) const APPLY: &str = "Apply";
pub(crate) const UPDATE: &str = "Update";

/// One managedFields entry.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) subresource: String,
    pub(crate) time: Option<String>,
    pub(crate) set: FieldSet,
}

impl Entry {
    /// Whether `self` is the entry of (manager, operation, subresource) and,
    /// for updates only, API version: the real server's manager identifier
    /// leaves the version out for appliers so each apply replaces the last.
    pub(crate) fn is(
        &self,
        manager: &str,
        operation: &str,
        api_version: &str,
        subresource: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == APPLY || self.api_version == api_version)
    }

    /// The manager identifier the real server builds (JSON of the entry
    /// without time and fields); conflict messages sort managers by it.
    pub(crate) fn identifier(&self) -> String {
        let mut id = Map::new();
        if !self.manager.is_empty() {
            id.insert("manager".into(), self.manager.clone().into());
        }
        if !self.operation.is_empty() {
            id.insert("operation".into(), self.operation.clone().into());
        }
        if self.operation != APPLY && !self.api_version.is_empty() {
            id.insert("apiVersion".into(), self.api_version.clone().into());
        }
        if !self.subresource.is_empty() {
            id.insert("subresource".into(), self.subresource.clone().into());
        }
        // Field order of Go's ManagedFieldsEntry, so the sort matches.
        let mut out = String::from("{");
        for (i, key) in ["manager", "operation", "apiVersion", "subresource"]
            .iter()
            .filter(|k| id.contains_key(**k))
            .enumerate()
        {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("{}:{}", Value::from(*key), id[*key]));
        }
        out.push('}');
        out
    }

    /// `"mgr"`, `"mgr" with subresource "status"`, `"mgr" using v1` (the
    /// server's `printManager`; the identifier never carries a time).
    pub(crate) fn printed(&self) -> String {
        let mut out = Value::from(self.manager.as_str()).to_string();
        if !self.subresource.is_empty() {
            out.push_str(&format!(
                " with subresource {}",
                Value::from(self.subresource.as_str())
            ));
        }
        if self.operation == UPDATE {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn decode(value: &Value) -> Option<Entry> {
        let obj = value.as_object()?;
        let text = |key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        if obj.get("fieldsType").is_some_and(|t| t != "FieldsV1") {
            return None;
        }
        Some(Entry {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            subresource: text("subresource"),
            time: obj.get("time").and_then(Value::as_str).map(str::to_owned),
            set: obj
                .get("fieldsV1")
                .map(FieldSet::from_fields_v1)
                .unwrap_or_default(),
        })
    }

    fn encode(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("manager".into(), self.manager.clone().into());
        obj.insert("operation".into(), self.operation.clone().into());
        obj.insert("apiVersion".into(), self.api_version.clone().into());
        if let Some(time) = &self.time {
            obj.insert("time".into(), time.clone().into());
        }
        obj.insert("fieldsType".into(), "FieldsV1".into());
        obj.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            obj.insert("subresource".into(), self.subresource.clone().into());
        }
        Value::Object(obj)
    }
}

/// The entries of `object`'s `metadata.managedFields` (none when absent).
/// As in the real server, a later entry with the same identity replaces an
/// earlier one.
pub(crate) fn decode(object: Option<&Value>) -> Vec<Entry> {
    let list = object
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array);
    let mut out: Vec<Entry> = Vec::new();
    for entry in list.into_iter().flatten().filter_map(Entry::decode) {
        out.retain(|e| {
            !e.is(
                &entry.manager,
                &entry.operation,
                &entry.api_version,
                &entry.subresource,
            )
        });
        out.push(entry);
    }
    out
}

/// The managedFields list for `entries`, dropping empty ones and sorted as
/// the real server sorts them: operation, then time (seconds), manager, API
/// version and subresource.
pub(crate) fn encode(mut entries: Vec<Entry>) -> Vec<Value> {
    entries.retain(|e| !e.set.is_empty());
    let seconds = |e: &Entry| {
        e.time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(0, |t| t.timestamp())
    };
    entries.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| seconds(a).cmp(&seconds(b)))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    entries.iter().map(Entry::encode).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_and_encodes_entries_in_server_order() {
        let obj = json!({"metadata": {"managedFields": [
            {"manager": "b", "operation": "Update", "apiVersion": "v1", "time": "2024-01-01T00:00:02Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:x": {}}}},
            {"manager": "z", "operation": "Apply", "apiVersion": "v1", "time": "2024-01-01T00:00:09Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:y": {}}}},
            {"manager": "a", "operation": "Update", "apiVersion": "v1", "time": "2024-01-01T00:00:05Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:s": {}}}, "subresource": "status"}
        ]}});
        let entries = decode(Some(&obj));
        assert_eq!(entries.len(), 3);
        let managers: Vec<String> = encode(entries)
            .iter()
            .map(|e| e["manager"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(managers, ["z", "b", "a"]);
    }

    #[test]
    fn prints_managers_like_the_api_server() {
        let entry = |op: &str, sub: &str| Entry {
            manager: "m".into(),
            operation: op.into(),
            api_version: "networking.istio.io/v1".into(),
            subresource: sub.into(),
            time: None,
            set: FieldSet::default(),
        };
        assert_eq!(entry(APPLY, "").printed(), "\"m\"");
        assert_eq!(
            entry(UPDATE, "").printed(),
            "\"m\" using networking.istio.io/v1"
        );
        assert_eq!(
            entry(UPDATE, "status").printed(),
            "\"m\" with subresource \"status\" using networking.istio.io/v1"
        );
        assert_eq!(
            entry(APPLY, "").identifier(),
            r#"{"manager":"m","operation":"Apply"}"#
        );
        assert_eq!(
            entry(UPDATE, "status").identifier(),
            r#"{"manager":"m","operation":"Update","apiVersion":"networking.istio.io/v1","subresource":"status"}"#
        );
    }
}
