//! Server-side `Table` output (what `kubectl get` asks for), from a CRD
//! version's additionalPrinterColumns.

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use super::resources::{ResourceDef, Storage, VersionDef};
use super::{events, jsonpath};

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

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// A built-in kind's column (the typed printers' columns are strings).
fn builtin(name: &str, description: &str, path: &str) -> Column {
    Column {
        name: name.into(),
        type_: "string".into(),
        format: String::new(),
        description: description.into(),
        priority: 0,
        path: Some(path.into()),
    }
}

/// Built-in kinds' columns, as the real printers name them.
fn builtin_columns(res: &ResourceDef) -> Vec<Column> {
    let mut cols = Vec::new();
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "namespaces") => cols.push(builtin(
            "Status",
            "The status of the namespace",
            ".status.phase",
        )),
        ("", "services") => {
            cols.push(builtin("Type", SERVICE_TYPE, ".spec.type"));
            cols.push(builtin("Cluster-IP", SERVICE_CLUSTER_IP, CLUSTER_IP));
            cols.push(builtin("External-IP", SERVICE_EXTERNAL_IPS, EXTERNAL_IP));
            cols.push(builtin("Port(s)", SERVICE_PORTS, PORTS));
            cols.push(builtin("Age", AGE_DESCRIPTION, AGE));
            cols.push(Column {
                priority: 1,
                ..builtin("Selector", SERVICE_SELECTOR, SELECTOR)
            });
            return cols;
        }
        ("coordination.k8s.io", "leases") => cols.push(builtin(
            "Holder",
            "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
            ".spec.holderIdentity",
        )),
        _ => {}
    }
    cols.push(builtin("Age", AGE_DESCRIPTION, AGE));
    cols
}

/// The path of built-in kinds' Age column: a string column the typed
/// printers fill with the object's age.
const AGE: &str = "<age>";
/// The Service printer's computed columns (`printService` of the real
/// server): the cluster IP or `<none>`, the external addresses (the load
/// balancer's, `<pending>`, or the externalName), `80/TCP` or
/// `80:30080/TCP` per port, the selector as `a=1,b=2`.
const CLUSTER_IP: &str = "<cluster-ip>";
const EXTERNAL_IP: &str = "<external-ip>";
const PORTS: &str = "<ports>";
const SELECTOR: &str = "<selector>";

const SERVICE_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
const SERVICE_CLUSTER_IP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const SERVICE_EXTERNAL_IPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
const SERVICE_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const SERVICE_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";

fn none_if_empty(list: Vec<String>) -> Value {
    if list.is_empty() {
        json!("<none>")
    } else {
        json!(list.join(","))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// A computed cell of the Service printer.
fn service_cell(svc: &Value, path: &str) -> Value {
    let spec = &svc["spec"];
    match path {
        CLUSTER_IP => match spec["clusterIP"].as_str() {
            Some(ip) if !ip.is_empty() => json!(ip),
            _ => json!("<none>"),
        },
        EXTERNAL_IP => {
            let external = strings(&spec["externalIPs"]);
            match spec["type"].as_str().unwrap_or_default() {
                "ExternalName" => json!(spec["externalName"].as_str().unwrap_or_default()),
                "LoadBalancer" => {
                    let mut all: Vec<String> = svc["status"]["loadBalancer"]["ingress"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|i| {
                            [&i["ip"], &i["hostname"]]
                                .into_iter()
                                .filter_map(Value::as_str)
                                .find(|s| !s.is_empty())
                                .map(str::to_string)
                        })
                        .collect();
                    all.extend(external);
                    if all.is_empty() {
                        json!("<pending>")
                    } else {
                        json!(all.join(","))
                    }
                }
                _ => none_if_empty(external),
            }
        }
        PORTS => none_if_empty(
            spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or_default();
                    match p["nodePort"].as_i64().filter(|n| *n != 0) {
                        Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                        None => format!("{}/{protocol}", p["port"]),
                    }
                })
                .collect(),
        ),
        SELECTOR => none_if_empty(
            spec["selector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        ),
        _ => Value::Null,
    }
}

fn columns(res: &ResourceDef, ver: &VersionDef) -> Vec<Column> {
    let mut cols = vec![Column {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: NAME_DESCRIPTION.into(),
        priority: 0,
        path: None,
    }];
    if res.custom && ver.columns.is_empty() {
        // A CRD without printer columns gets Age, as on the real server.
        cols.push(Column {
            type_: "date".into(),
            ..builtin("Age", AGE_DESCRIPTION, ".metadata.creationTimestamp")
        });
    } else if res.custom {
        cols.extend(ver.columns.iter().map(|c| Column {
            name: c.name.clone(),
            type_: c.type_.clone(),
            format: c.format.clone(),
            description: if c.description.is_empty() {
                format!(
                    "Custom resource definition column (in JSONPath format): {}",
                    c.json_path
                )
            } else {
                c.description.clone()
            },
            priority: c.priority,
            path: Some(c.json_path.clone()),
        }));
    } else {
        cols.extend(builtin_columns(res));
    }
    cols
}

/// HumanDuration of k8s.io/apimachinery/pkg/util/duration: how the real
/// server prints an age.
fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let (minutes, hours) = (secs / 60, secs / 3600);
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    match hours {
        _ if minutes < 10 => with(minutes, "m", secs % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        h if h < 8 => with(h, "h", minutes % 60, "m"),
        h if h < 48 => format!("{h}h"),
        h if h < 24 * 8 => with(h / 24, "d", h % 24, "h"),
        h if h < 24 * 365 * 2 => format!("{}d", h / 24),
        h if h < 24 * 365 * 8 => with(h / 24 / 365, "y", (h / 24) % 365, "d"),
        h => format!("{}y", h / 24 / 365),
    }
}

/// How long ago the RFC 3339 time `ts` was (`<invalid>` if it is not one).
pub fn human_age(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<invalid>".into();
    };
    human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
}

/// A `string` column's text: jsonpath's PrintResults (maps and lists as
/// JSON, scalars as text).
fn text(v: &Value) -> Value {
    match v {
        Value::String(s) => json!(s),
        Value::Null => Value::Null,
        v => json!(v.to_string()),
    }
}

/// The cell of the first value a column's path selects, typed as the real
/// server's cellForJSONValue (nothing when the value is not of the type).
fn cell(obj: &Value, col: &Column) -> Value {
    let Some(path) = &col.path else {
        return obj["metadata"]["name"].clone();
    };
    if path == AGE {
        let created = obj["metadata"]["creationTimestamp"].as_str();
        return json!(created.map_or_else(|| "<unknown>".into(), human_age));
    }
    if [CLUSTER_IP, EXTERNAL_IP, PORTS, SELECTOR].contains(&path.as_str()) {
        return service_cell(obj, path);
    }
    let Some(v) = jsonpath::find(obj, path)
        .ok()
        .and_then(|found| found.first().copied())
    else {
        return Value::Null;
    };
    match (col.type_.as_str(), v) {
        ("string", v) => text(v),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |i| json!(i)),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(s)) => json!(human_age(s)),
        _ => Value::Null,
    }
}

fn row(obj: &Value, cells: Vec<Value>, include: Include) -> Value {
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
    let (rows, defs): (Vec<Value>, Value) = if res.storage.is_event() {
        // Events have a printer of their own (cells from the core v1 shape).
        let rows = objs
            .into_iter()
            .map(|o| {
                let core = match res.storage {
                    Storage::EventsV1 => events::core_from_v1(o),
                    _ => o.clone(),
                };
                row(o, events::cells(&core), include)
            })
            .collect();
        (rows, events::columns())
    } else {
        let cols = columns(res, ver);
        let rows = objs
            .into_iter()
            .map(|o| row(o, cols.iter().map(|c| cell(o, c)).collect(), include))
            .collect();
        let defs = cols
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "type": c.type_, "format": c.format,
                    "description": c.description, "priority": c.priority,
                })
            })
            .collect();
        (rows, defs)
    };
    let defs = if with_columns { defs } else { json!([]) };
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
        assert!(cells[1].as_str().unwrap().contains('y'), "{cells}");
        assert_eq!(cells[2], "10.0.0.1");
        assert!(t["rows"][0].get("object").is_none());
    }

    #[test]
    fn ready_column_of_the_mirror_crd() {
        let crds = parse_crds(include_str!("../../../../deploy/crd.yaml")).unwrap();
        let res = &crds[0];
        let obj = json!({"metadata": {"name": "web"}, "status": {"provider": "sim", "members": 3,
            "entries": 3, "conditions": [{"type": "Degraded", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let t = table(
            res,
            &res.versions[0],
            [&obj],
            json!({}),
            Include::None,
            true,
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let ready = names.iter().position(|n| *n == "Ready").unwrap();
        assert_eq!(t["rows"][0]["cells"][ready], "True");
        let members = names.iter().position(|n| *n == "Members").unwrap();
        assert_eq!(t["rows"][0]["cells"][members], 3);
    }

    #[test]
    fn services_print_as_the_real_printer() {
        let reg = crate::apiserver::resources::Registry::new(Vec::new());
        let res = &reg.resources[reg.find("", "v1", "services").unwrap()];
        let svc = |name: &str, spec: Value| {
            json!({"metadata": {"name": name, "creationTimestamp": "2020-01-01T00:00:00Z"},
                "spec": spec, "status": {"loadBalancer": {}}})
        };
        let objs = [
            svc(
                "ext",
                json!({"type": "ExternalName", "externalName": "db.example.com"}),
            ),
            svc("hl2", json!({"type": "ClusterIP", "clusterIP": "None"})),
            svc(
                "lb",
                json!({"type": "LoadBalancer", "clusterIP": "10.110.54.1", "externalIPs": ["1.2.3.4"],
                "selector": {"b": "2", "a": "1"}, "ports": [
                    {"port": 80, "protocol": "TCP", "nodePort": 31858},
                    {"port": 443, "protocol": "UDP", "nodePort": 31889}]}),
            ),
            svc(
                "np",
                json!({"type": "NodePort", "clusterIP": "10.111.220.66",
                "externalIPs": ["1.2.3.4", "5.6.7.8"],
                "ports": [{"port": 80, "protocol": "TCP", "nodePort": 32575}]}),
            ),
            svc(
                "web",
                json!({"type": "ClusterIP", "clusterIP": "10.106.119.159", "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}),
            ),
        ];
        let t = table(res, &res.versions[0], &objs, json!({}), Include::None, true);
        let names: Vec<(&str, i64)> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("Name", 0),
                ("Type", 0),
                ("Cluster-IP", 0),
                ("External-IP", 0),
                ("Port(s)", 0),
                ("Age", 0),
                ("Selector", 1)
            ]
        );
        // The real server's rows (v1.37), Age aside.
        let want = [
            [
                "ext",
                "ExternalName",
                "<none>",
                "db.example.com",
                "<none>",
                "<none>",
            ],
            ["hl2", "ClusterIP", "None", "<none>", "<none>", "<none>"],
            [
                "lb",
                "LoadBalancer",
                "10.110.54.1",
                "1.2.3.4",
                "80:31858/TCP,443:31889/UDP",
                "a=1,b=2",
            ],
            [
                "np",
                "NodePort",
                "10.111.220.66",
                "1.2.3.4,5.6.7.8",
                "80:32575/TCP",
                "<none>",
            ],
            [
                "web",
                "ClusterIP",
                "10.106.119.159",
                "<none>",
                "80/TCP",
                "app=web",
            ],
        ];
        for (row, want) in t["rows"].as_array().unwrap().iter().zip(want) {
            let mut cells: Vec<Value> = row["cells"].as_array().unwrap().clone();
            cells.remove(5);
            assert_eq!(cells, want.map(|c| json!(c)));
        }
        let pending = svc("p", json!({"type": "LoadBalancer", "ports": []}));
        assert_eq!(service_cell(&pending, EXTERNAL_IP), "<pending>");
    }

    #[test]
    fn cells_are_typed_like_the_real_server() {
        let col = |type_: &str| Column {
            name: "c".into(),
            type_: type_.into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            path: Some(".v".into()),
        };
        let c = |type_: &str, v: Value| cell(&json!({"v": v}), &col(type_));
        assert_eq!(c("string", json!(3)), "3");
        assert_eq!(c("string", json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(c("integer", json!("3")), Value::Null);
        assert_eq!(c("integer", json!(2.0)), 2);
        assert_eq!(c("boolean", json!(true)), true);
        assert_eq!(c("date", json!("x")), "<invalid>");
    }

    #[test]
    fn ages_like_human_duration() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (30 * 86400, "30d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }
}
