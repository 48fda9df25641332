//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! kubectl's typed clients send for built-in kinds (`kubectl create
//! namespace`, `kubectl auth can-i`): the magic `k8s\0`, then a
//! `runtime.Unknown` naming the kind and holding the object, decoded with
//! k8s-pb's types and turned into the JSON a JSON client would have sent
//! (Go's `omitempty`: unset and empty strings and lists are left out).

use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::events::v1 as events;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// A body that cannot be turned into JSON.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the protobuf body does not start with the magic k8s\\0")]
    NoMagic,
    #[error("cannot decode the protobuf body: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the test kit cannot decode protobuf bodies of kind {0}")]
    UnknownKind(String),
}

/// A protobuf body as client-go sends it: the magic, then a
/// `runtime.Unknown` naming the kind around `raw` (the encoded object); for
/// tests that send what kubectl sends.
pub fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

/// The JSON object of a protobuf request body.
pub fn to_json(body: &[u8]) -> Result<Value, DecodeError> {
    let rest = body.strip_prefix(MAGIC).ok_or(DecodeError::NoMagic)?;
    let unknown = Unknown::decode(rest)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let raw = raw.as_slice();
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(core::Namespace::decode(raw)?),
        ("v1", "Event") => core_event(core::Event::decode(raw)?),
        ("events.k8s.io/v1", "Event") => event(events::Event::decode(raw)?),
        ("coordination.k8s.io/v1", "Lease") => lease(coordination::Lease::decode(raw)?),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            self_review(authz::SelfSubjectAccessReview::decode(raw)?)
        }
        // Typed clients send DeleteOptions in the group-version of the call.
        (_, "DeleteOptions") => delete_options(meta::DeleteOptions::decode(raw)?),
        _ => {
            let gvk = if api_version.is_empty() {
                kind
            } else {
                format!("{api_version} {kind}")
            };
            return Err(DecodeError::UnknownKind(gvk));
        }
    };
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

/// A JSON object built field by field, leaving out what Go's `omitempty`
/// would.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn str(mut self, k: &str, v: Option<String>) -> Self {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            self.0.insert(k.into(), json!(v));
        }
        self
    }

    fn int(mut self, k: &str, v: Option<impl Into<i64>>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), json!(v.into()));
        }
        self
    }

    fn bool(mut self, k: &str, v: Option<bool>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), json!(v));
        }
        self
    }

    fn strs(mut self, k: &str, v: Vec<String>) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), json!(v));
        }
        self
    }

    fn val(mut self, k: &str, v: Option<Value>) -> Self {
        match v {
            Some(Value::Object(m)) if m.is_empty() => {}
            Some(v) => {
                self.0.insert(k.into(), v);
            }
            None => {}
        }
        self
    }

    fn list(self, k: &str, v: Vec<Value>) -> Self {
        let v = (!v.is_empty()).then_some(Value::Array(v));
        self.val(k, v)
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// A `metav1.Time` (seconds; a zero time is an empty message, JSON null).
fn time(t: Option<meta::Time>) -> Option<Value> {
    t.map(|t| stamp(t.seconds, None))
}

/// A `metav1.MicroTime` (microseconds).
fn micro(t: Option<meta::MicroTime>) -> Option<Value> {
    t.map(|t| stamp(t.seconds, Some(t.nanos.unwrap_or(0))))
}

fn stamp(seconds: Option<i64>, nanos: Option<i32>) -> Value {
    let Some(secs) = seconds else {
        return Value::Null;
    };
    let nsec = nanos.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let Some(t) = chrono::DateTime::from_timestamp(secs, nsec) else {
        return Value::Null;
    };
    let format = if nanos.is_some() {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    json!(t.format(format).to_string())
}

fn string_map(m: std::collections::BTreeMap<String, String>) -> Option<Value> {
    (!m.is_empty()).then(|| json!(m))
}

fn object_meta(m: Option<meta::ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let owners = m.owner_references.into_iter().map(|o| {
        Obj::default()
            .str("apiVersion", o.api_version)
            .str("kind", o.kind)
            .str("name", o.name)
            .str("uid", o.uid)
            .bool("controller", o.controller)
            .bool("blockOwnerDeletion", o.block_owner_deletion)
            .done()
    });
    let managed = m.managed_fields.into_iter().map(|f| {
        let fields = f.fields_v1.and_then(|f| f.raw);
        Obj::default()
            .str("manager", f.manager)
            .str("operation", f.operation)
            .str("apiVersion", f.api_version)
            .val("time", time(f.time))
            .str("fieldsType", f.fields_type)
            .val(
                "fieldsV1",
                fields.and_then(|raw| serde_json::from_slice(&raw).ok()),
            )
            .str("subresource", f.subresource)
            .done()
    });
    Obj::default()
        .str("name", m.name)
        .str("generateName", m.generate_name)
        .str("namespace", m.namespace)
        .str("uid", m.uid)
        .str("resourceVersion", m.resource_version)
        .int(
            "deletionGracePeriodSeconds",
            m.deletion_grace_period_seconds,
        )
        .val("labels", string_map(m.labels))
        .val("annotations", string_map(m.annotations))
        .list("ownerReferences", owners.collect())
        .strs("finalizers", m.finalizers)
        .list("managedFields", managed.collect())
        .done()
}

fn namespace(ns: core::Namespace) -> Value {
    let spec = ns
        .spec
        .map(|s| Obj::default().strs("finalizers", s.finalizers).done());
    let status = ns.status.map(|s| {
        let conditions = s.conditions.into_iter().map(|c| {
            Obj::default()
                .str("type", c.r#type)
                .str("status", c.status)
                .val("lastTransitionTime", time(c.last_transition_time))
                .str("reason", c.reason)
                .str("message", c.message)
                .done()
        });
        Obj::default()
            .str("phase", s.phase)
            .list("conditions", conditions.collect())
            .done()
    });
    Obj::default()
        .val("metadata", Some(object_meta(ns.metadata)))
        .val("spec", spec)
        .val("status", status)
        .done()
}

fn object_ref(r: Option<core::ObjectReference>) -> Option<Value> {
    r.map(|r| {
        Obj::default()
            .str("kind", r.kind)
            .str("namespace", r.namespace)
            .str("name", r.name)
            .str("uid", r.uid)
            .str("apiVersion", r.api_version)
            .str("resourceVersion", r.resource_version)
            .str("fieldPath", r.field_path)
            .done()
    })
}

fn source(s: Option<core::EventSource>) -> Option<Value> {
    s.map(|s| {
        Obj::default()
            .str("component", s.component)
            .str("host", s.host)
            .done()
    })
}

fn series(count: Option<i32>, last: Option<meta::MicroTime>) -> Value {
    Obj::default()
        .int("count", count)
        .val("lastObservedTime", micro(last))
        .done()
}

fn core_event(e: core::Event) -> Value {
    Obj::default()
        .val("metadata", Some(object_meta(e.metadata)))
        .val("involvedObject", object_ref(e.involved_object))
        .str("reason", e.reason)
        .str("message", e.message)
        .val("source", source(e.source))
        .val("firstTimestamp", time(e.first_timestamp))
        .val("lastTimestamp", time(e.last_timestamp))
        .int("count", e.count)
        .str("type", e.r#type)
        .val("eventTime", micro(e.event_time))
        .val(
            "series",
            e.series.map(|s| series(s.count, s.last_observed_time)),
        )
        .str("action", e.action)
        .val("related", object_ref(e.related))
        .str("reportingComponent", e.reporting_component)
        .str("reportingInstance", e.reporting_instance)
        .done()
}

fn event(e: events::Event) -> Value {
    Obj::default()
        .val("metadata", Some(object_meta(e.metadata)))
        .val("eventTime", micro(e.event_time))
        .val(
            "series",
            e.series.map(|s| series(s.count, s.last_observed_time)),
        )
        .str("reportingController", e.reporting_controller)
        .str("reportingInstance", e.reporting_instance)
        .str("action", e.action)
        .str("reason", e.reason)
        .val("regarding", object_ref(e.regarding))
        .val("related", object_ref(e.related))
        .str("note", e.note)
        .str("type", e.r#type)
        .val("deprecatedSource", source(e.deprecated_source))
        .val(
            "deprecatedFirstTimestamp",
            time(e.deprecated_first_timestamp),
        )
        .val("deprecatedLastTimestamp", time(e.deprecated_last_timestamp))
        .int("deprecatedCount", e.deprecated_count)
        .done()
}

fn lease(l: coordination::Lease) -> Value {
    let spec = l.spec.map(|s| {
        Obj::default()
            .str("holderIdentity", s.holder_identity)
            .int("leaseDurationSeconds", s.lease_duration_seconds)
            .val("acquireTime", micro(s.acquire_time))
            .val("renewTime", micro(s.renew_time))
            .int("leaseTransitions", s.lease_transitions)
            .str("strategy", s.strategy)
            .str("preferredHolder", s.preferred_holder)
            .done()
    });
    Obj::default()
        .val("metadata", Some(object_meta(l.metadata)))
        .val("spec", spec)
        .done()
}

fn self_review(r: authz::SelfSubjectAccessReview) -> Value {
    let spec = r.spec.unwrap_or_default();
    let resource = spec.resource_attributes.map(|a| {
        Obj::default()
            .str("namespace", a.namespace)
            .str("verb", a.verb)
            .str("group", a.group)
            .str("version", a.version)
            .str("resource", a.resource)
            .str("subresource", a.subresource)
            .str("name", a.name)
            .val(
                "fieldSelector",
                a.field_selector
                    .map(|f| Obj::default().str("rawSelector", f.raw_selector).done()),
            )
            .val(
                "labelSelector",
                a.label_selector
                    .map(|l| Obj::default().str("rawSelector", l.raw_selector).done()),
            )
            .done()
    });
    let non_resource = spec.non_resource_attributes.map(|a| {
        Obj::default()
            .str("path", a.path)
            .str("verb", a.verb)
            .done()
    });
    let spec = Obj::default()
        .val("resourceAttributes", resource)
        .val("nonResourceAttributes", non_resource)
        .done();
    Obj::default()
        .val("metadata", Some(object_meta(r.metadata)))
        .val("spec", Some(spec))
        .done()
}

fn delete_options(o: meta::DeleteOptions) -> Value {
    let pre = o.preconditions.map(|p| {
        Obj::default()
            .str("uid", p.uid)
            .str("resourceVersion", p.resource_version)
            .done()
    });
    Obj::default()
        .int("gracePeriodSeconds", o.grace_period_seconds)
        .val("preconditions", pre)
        .bool("orphanDependents", o.orphan_dependents)
        .str("propagationPolicy", o.propagation_policy)
        .strs("dryRun", o.dry_run)
        .done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_as_kubectl_create_sends_it() {
        // Go's encoder writes every non-pointer field, empty ones too.
        let ns = core::Namespace {
            metadata: Some(meta::ObjectMeta {
                name: Some("team-a".into()),
                generate_name: Some(String::new()),
                creation_timestamp: Some(meta::Time::default()),
                ..Default::default()
            }),
            spec: Some(core::NamespaceSpec::default()),
            status: Some(core::NamespaceStatus {
                phase: Some(String::new()),
                conditions: vec![],
            }),
        };
        let v = to_json(&envelope("v1", "Namespace", ns.encode_to_vec())).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
        );
    }

    #[test]
    fn times_and_events() {
        let e = events::Event {
            metadata: Some(meta::ObjectMeta {
                name: Some("web.1".into()),
                ..Default::default()
            }),
            event_time: Some(meta::MicroTime {
                seconds: Some(1_767_225_600),
                nanos: Some(123_456_000),
            }),
            note: Some("hi".into()),
            deprecated_first_timestamp: Some(meta::Time::default()),
            regarding: Some(core::ObjectReference {
                kind: Some("Pod".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = to_json(&envelope("events.k8s.io/v1", "Event", e.encode_to_vec())).unwrap();
        assert_eq!(v["eventTime"], "2026-01-01T00:00:00.123456Z");
        assert_eq!(v["deprecatedFirstTimestamp"], Value::Null);
        assert_eq!(v["regarding"], json!({"kind": "Pod"}));
        assert_eq!(v["note"], "hi");
    }

    #[test]
    fn unknown_kinds_and_bodies_are_refused_by_name() {
        let e = to_json(&envelope("apps/v1", "Deployment", vec![])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the test kit cannot decode protobuf bodies of kind apps/v1 Deployment"
        );
        assert!(matches!(to_json(b"{}"), Err(DecodeError::NoMagic)));
    }
}
