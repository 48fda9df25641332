//! core v1 Services: what the real server's defaulting, Service strategy and
//! Service REST storage do to one on create and update, in the order the
//! handler calls them (see `Ctx::finish` and `Ctx::write`):
//!
//! 1. [`prepare`], before managedFields are recorded (so the writer of a
//!    create or update owns the defaults, as on the real server, where
//!    decoding sets them): `SetDefaults_Service` (`type: ClusterIP`,
//!    `sessionAffinity: None`, each port's `protocol: TCP` and `targetPort`
//!    = `port`, `internalTrafficPolicy: Cluster`, ...); on update the
//!    strategy's wiping of fields a new type no longer has and the
//!    allocated addresses kept from the live object; `clusterIP` and
//!    `clusterIPs` kept in step;
//! 2. [`validate`]: the checks of `ValidateService` a controller could trip
//!    on (ports, names, type, cluster IPs), with the real messages;
//! 3. [`complete`], after managedFields (nobody owns these): `ipFamilies`
//!    and `ipFamilyPolicy` (kept from the live object on update),
//!    `status: {loadBalancer: {}}`;
//! 4. [`allocate`], under the store lock just before storing: a cluster IP
//!    from [`clusterip`](super::clusterip), unique among the stored Services.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value, json};

use super::clusterip::{self, Refused};
use super::objects;
use super::resources::{ResId, ResourceDef};
use super::status::{ApiError, Cause};
use super::store::{ObjKey, Store};
use crate::ssa;

const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const AFFINITIES: [&str; 2] = ["ClientIP", "None"];
/// `DefaultClientIPServiceAffinitySeconds`: three hours.
const CLIENT_IP_TIMEOUT: i64 = 10_800;

/// Whether `res` is core v1 Services.
pub fn is_service(res: &ResourceDef) -> bool {
    !res.custom && res.group.is_empty() && res.plural == "services"
}

/// The merge structure server-side apply uses for Services: the real
/// server's (OpenAPI) schema, so that `selector` is an atomic map and
/// `ports` a list keyed by `port` and `protocol` (`TCP` when left out),
/// with `status` reset by main-resource writes.
pub fn ssa_schema() -> Arc<ssa::Schema> {
    static SCHEMA: OnceLock<Arc<ssa::Schema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let schema = super::openapi::builtin_resolved("io.k8s.api.core.v1.Service")
                .expect("the OpenAPI fixture has the Service schema");
            Arc::new(ssa::Schema::from_openapi_v3(&schema).with_status_subresource(true))
        })
        .clone()
}

fn spec_mut(svc: &mut Value) -> &mut Map<String, Value> {
    if !svc["spec"].is_object() {
        svc["spec"] = json!({});
    }
    svc["spec"]
        .as_object_mut()
        .expect("spec was just made an object")
}

fn str_of<'a>(spec: &'a Value, field: &str) -> &'a str {
    spec[field].as_str().unwrap_or_default()
}

fn ports(spec: &Value) -> &[Value] {
    spec["ports"].as_array().map_or(&[], Vec::as_slice)
}

/// `type` as stored (ClusterIP when unset, as after defaulting).
fn service_type(spec: &Value) -> &str {
    match str_of(spec, "type") {
        "" => "ClusterIP",
        t => t,
    }
}

fn headless(spec: &Value) -> bool {
    str_of(spec, "clusterIP") == "None"
}

/// `needsClusterIP`: every type but ExternalName ("None" counts as a value).
fn needs_cluster_ip(spec: &Value) -> bool {
    service_type(spec) != "ExternalName"
}

/// Whether an address must be allocated for it (not headless, not
/// ExternalName).
fn wants_address(spec: &Value) -> bool {
    needs_cluster_ip(spec) && !headless(spec)
}

/// `service.ExternallyAccessible`.
fn externally_accessible(spec: &Value) -> bool {
    match service_type(spec) {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => spec["externalIPs"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        _ => false,
    }
}

/// `targetPort` unset: absent, null, 0 or "".
fn unset_port(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Step 1 (before managedFields): `SetDefaults_Service`; on update the
/// strategy's `dropTypeDependentFields` and the storage's
/// `patchAllocatedValues` (the addresses the new object leaves out are the
/// live object's); then `NormalizeClusterIPs`, which keeps `clusterIP` and
/// `clusterIPs` in step.
pub fn prepare(live: Option<&Value>, svc: &mut Value) {
    let spec = spec_mut(svc);
    set_defaults(spec);
    let old = live.map(|l| &l["spec"]);
    if let Some(old) = old {
        drop_type_dependent_fields(old, spec);
        patch_allocated_values(old, spec);
    }
    normalize_cluster_ips(old, spec);
}

fn set_defaults(spec: &mut Map<String, Value>) {
    let empty = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
    if empty(spec.get("sessionAffinity")) {
        spec.insert("sessionAffinity".into(), json!("None"));
    }
    if spec["sessionAffinity"] == "None" {
        spec.remove("sessionAffinityConfig");
    } else if spec["sessionAffinity"] == "ClientIP"
        && spec
            .get("sessionAffinityConfig")
            .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
            .is_none_or(Value::is_null)
    {
        spec.insert(
            "sessionAffinityConfig".into(),
            json!({"clientIP": {"timeoutSeconds": CLIENT_IP_TIMEOUT}}),
        );
    }
    if empty(spec.get("type")) {
        spec.insert("type".into(), json!("ClusterIP"));
    }
    if let Some(list) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in list.iter_mut().filter_map(Value::as_object_mut) {
            if empty(port.get("protocol")) {
                port.insert("protocol".into(), json!("TCP"));
            }
            if port.get("targetPort").is_none_or(unset_port) {
                let number = port.get("port").cloned().unwrap_or(json!(0));
                port.insert("targetPort".into(), number);
            }
        }
    }
    let spec_value = Value::Object(spec.clone());
    if externally_accessible(&spec_value) && empty(spec.get("externalTrafficPolicy")) {
        spec.insert("externalTrafficPolicy".into(), json!("Cluster"));
    }
    let kind = service_type(&spec_value).to_string();
    if spec.get("internalTrafficPolicy").is_none_or(Value::is_null)
        && matches!(kind.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer")
    {
        spec.insert("internalTrafficPolicy".into(), json!("Cluster"));
    }
    if kind == "LoadBalancer"
        && spec
            .get("allocateLoadBalancerNodePorts")
            .is_none_or(Value::is_null)
    {
        spec.insert("allocateLoadBalancerNodePorts".into(), json!(true));
    }
}

/// A field the update left as it was (absent on both counts as the same).
fn same(old: &Value, new: &Map<String, Value>, field: &str) -> bool {
    let n = new.get(field).unwrap_or(&Value::Null);
    old[field] == *n
}

/// A type that no longer needs a cluster IP (ExternalName) loses the
/// addresses, families and internal traffic policy the old type had, when
/// the update left them as they were (they came from the live object).
fn drop_type_dependent_fields(old: &Value, new: &mut Map<String, Value>) {
    let new_value = Value::Object(new.clone());
    if needs_cluster_ip(old) && !needs_cluster_ip(&new_value) {
        if same(old, new, "clusterIP") && same(old, new, "clusterIPs") {
            new.remove("clusterIP");
            new.remove("clusterIPs");
        }
        for field in ["ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"] {
            if same(old, new, field) {
                new.remove(field);
            }
        }
    }
}

/// `clusterIPs` as written.
fn cluster_ips(spec: &Value) -> Vec<String> {
    spec["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn set_cluster_ips(spec: &mut Map<String, Value>, ips: &[String]) {
    if ips.is_empty() {
        spec.remove("clusterIPs");
    } else {
        spec.insert("clusterIPs".into(), json!(ips));
    }
}

/// An update leaving out `clusterIP` or `clusterIPs` keeps the live ones,
/// while both the old and the new type need one.
fn patch_allocated_values(old: &Value, new: &mut Map<String, Value>) {
    let new_value = Value::Object(new.clone());
    if !(needs_cluster_ip(old) && needs_cluster_ip(&new_value)) {
        return;
    }
    if str_of(&new_value, "clusterIP").is_empty() && !str_of(old, "clusterIP").is_empty() {
        new.insert("clusterIP".into(), old["clusterIP"].clone());
    }
    if cluster_ips(&new_value).is_empty() && !cluster_ips(old).is_empty() {
        new.insert("clusterIPs".into(), old["clusterIPs"].clone());
    }
}

/// `NormalizeClusterIPs`: a create setting `clusterIP` alone gets it as
/// `clusterIPs`; an update changing `clusterIP` but not `clusterIPs` moves
/// both (validation then refuses the move), one clearing `clusterIP` alone
/// clears both.
fn normalize_cluster_ips(old: Option<&Value>, new: &mut Map<String, Value>) {
    let view = Value::Object(new.clone());
    let (ip, ips) = (str_of(&view, "clusterIP"), cluster_ips(&view));
    let Some(old) = old else {
        if !ip.is_empty() && ips.is_empty() {
            set_cluster_ips(new, &[ip.to_string()]);
        }
        return;
    };
    let (old_ip, old_ips) = (str_of(old, "clusterIP"), cluster_ips(old));
    if !old_ips.is_empty() && ips.is_empty() && old_ip == ip {
        set_cluster_ips(new, &old_ips);
    }
    if old_ip != ip {
        if !old_ip.is_empty() && ip.is_empty() && ips == old_ips {
            set_cluster_ips(new, &[]);
        }
        if !ip.is_empty() && ips == old_ips {
            set_cluster_ips(new, &[ip.to_string()]);
        }
    }
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

fn quoted_list(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unsupported(field: &str, value: &str, supported: &[&str]) -> Cause {
    cause(
        "FieldValueNotSupported",
        field,
        format!(
            "Unsupported value: {value:?}: supported values: {}",
            quoted_list(supported)
        ),
    )
}

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

fn port_number_ok(n: i64) -> bool {
    (1..=65535).contains(&n)
}

/// `IsValidPortName`: an IANA service name.
fn port_name_problems(name: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if name.len() > 15 {
        out.push("must be no more than 15 characters");
    }
    let charset = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !charset {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        out.push("must not contain consecutive hyphens (-)");
    }
    if name.starts_with('-') || name.ends_with('-') {
        out.push("must not begin or end with a hyphen (-)");
    }
    out
}

fn validate_port(
    port: &Value,
    path: &str,
    require_name: bool,
    names: &mut HashSet<String>,
) -> Vec<Cause> {
    let mut out = Vec::new();
    let name = str_of(port, "name");
    if require_name && name.is_empty() {
        out.push(cause(
            "FieldValueRequired",
            &format!("{path}.name"),
            "Required value".into(),
        ));
    } else if !name.is_empty() {
        if let Some(problem) = objects::label_problem(name) {
            out.push(cause(
                "FieldValueInvalid",
                &format!("{path}.name"),
                format!("Invalid value: {name:?}: {problem}"),
            ));
        }
        if !names.insert(name.to_string()) {
            out.push(cause(
                "FieldValueDuplicate",
                &format!("{path}.name"),
                format!("Duplicate value: {name:?}"),
            ));
        }
    }
    let number = port["port"].as_i64().unwrap_or(0);
    if !port_number_ok(number) {
        out.push(cause(
            "FieldValueInvalid",
            &format!("{path}.port"),
            format!("Invalid value: {number}: {PORT_RANGE}"),
        ));
    }
    match str_of(port, "protocol") {
        "" => out.push(cause(
            "FieldValueRequired",
            &format!("{path}.protocol"),
            "Required value".into(),
        )),
        p if !PROTOCOLS.contains(&p) => {
            out.push(unsupported(&format!("{path}.protocol"), p, &PROTOCOLS))
        }
        _ => {}
    }
    let target = format!("{path}.targetPort");
    match &port["targetPort"] {
        Value::String(s) => {
            for problem in port_name_problems(s) {
                out.push(cause(
                    "FieldValueInvalid",
                    &target,
                    format!("Invalid value: {s:?}: {problem}"),
                ));
            }
        }
        v => {
            let n = v.as_i64().unwrap_or(0);
            if !port_number_ok(n) {
                out.push(cause(
                    "FieldValueInvalid",
                    &target,
                    format!("Invalid value: {n}: {PORT_RANGE}"),
                ));
            }
        }
    }
    out
}

/// The JSON list Go prints for a `[]string` value in a message.
fn json_list(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_default()
}

/// The message of an address the allocator refused.
fn refused(ips: &[String], ip: &str, why: Refused) -> Cause {
    cause(
        "FieldValueInvalid",
        "spec.clusterIPs",
        format!(
            "Invalid value: {}: failed to allocate IP {ip}: {why}",
            json_list(ips)
        ),
    )
}

/// Step 2: the checks of `ValidateService` (and `ValidateServiceUpdate`'s on
/// cluster IPs) that the fake makes, in the real server's order and words;
/// and the allocator's range check of an address asked for (a dry run makes
/// it too). Not checked: selectors' label syntax, external IPs, node ports,
/// load balancer fields, duplicate ports, IP families.
pub fn validate(live: Option<&Value>, svc: &Value) -> Vec<Cause> {
    let spec = &svc["spec"];
    let mut out = Vec::new();
    let kind = service_type(spec);
    let ips = cluster_ips(spec);
    if ports(spec).is_empty() && !headless(spec) && kind != "ExternalName" {
        out.push(cause(
            "FieldValueRequired",
            "spec.ports",
            "Required value".into(),
        ));
    }
    if kind == "ExternalName" {
        for (field, set) in [
            ("spec.clusterIPs", !ips.is_empty()),
            (
                "spec.ipFamilies",
                spec["ipFamilies"].as_array().is_some_and(|a| !a.is_empty()),
            ),
            ("spec.ipFamilyPolicy", !spec["ipFamilyPolicy"].is_null()),
        ] {
            if set {
                out.push(cause(
                    "FieldValueForbidden",
                    field,
                    "Forbidden: may not be set for ExternalName services".into(),
                ));
            }
        }
        let cname = str_of(spec, "externalName").trim_end_matches('.');
        if cname.is_empty() {
            out.push(cause(
                "FieldValueRequired",
                "spec.externalName",
                "Required value".into(),
            ));
        }
    }
    let mut names = HashSet::new();
    let several = ports(spec).len() > 1;
    for (i, port) in ports(spec).iter().enumerate() {
        out.extend(validate_port(
            port,
            &format!("spec.ports[{i}]"),
            several,
            &mut names,
        ));
    }
    match str_of(spec, "sessionAffinity") {
        "" => out.push(cause(
            "FieldValueRequired",
            "spec.sessionAffinity",
            "Required value".into(),
        )),
        a if !AFFINITIES.contains(&a) => {
            out.push(unsupported("spec.sessionAffinity", a, &AFFINITIES))
        }
        _ => {}
    }
    if !TYPES.contains(&kind) {
        out.push(unsupported("spec.type", kind, &TYPES));
    }
    let ip = str_of(spec, "clusterIP");
    let consistent = match ips.first() {
        Some(_) if ip.is_empty() => Some("must be empty when `clusterIP` is not specified"),
        Some(first) if first != ip => Some("first value must match `clusterIP`"),
        _ => None,
    };
    if let Some(problem) = consistent {
        out.push(cause(
            "FieldValueInvalid",
            "spec.clusterIPs",
            format!("Invalid value: {}: {problem}", json_list(&ips)),
        ));
        return out;
    }
    for (i, ip) in ips.iter().enumerate() {
        if (i == 0 && ip == "None") || ip.parse::<IpAddr>().is_ok() {
            continue;
        }
        out.push(cause(
            "FieldValueInvalid",
            &format!("spec.clusterIPs[{i}]"),
            format!(
                "Invalid value: {ip:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            ),
        ));
    }
    if let Some(live) = live {
        let old = &live["spec"];
        let old_ips = cluster_ips(old);
        let external = kind == "ExternalName" || service_type(old) == "ExternalName";
        if !external && !old_ips.is_empty() && !ips.is_empty() && old_ips[0] != ips[0] {
            out.push(cause(
                "FieldValueInvalid",
                "spec.clusterIPs[0]",
                format!(
                    "Invalid value: {}: may not change once set",
                    json_list(&ips)
                ),
            ));
            return out;
        }
    }
    if out.is_empty() && kind != "ExternalName" {
        let asked = ips.first().map(String::as_str).unwrap_or_default();
        let kept = live
            .is_some_and(|l| cluster_ips(&l["spec"]).first().map(String::as_str) == Some(asked));
        if !asked.is_empty() && asked != "None" && !kept {
            let range = match asked.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => clusterip::check(ip),
                _ => Err(Refused::OtherNetwork),
            };
            if let Err(why) = range {
                out.push(refused(&ips, asked, why));
            }
        }
    }
    out
}

/// Step 3 (after managedFields): what the storage sets and nobody owns.
/// On update the families and policy the new object leaves out are the
/// live object's; else they default as on a single-stack IPv4 cluster (a
/// headless Service without selector asks for both families, as the real
/// server answers). The status is `{loadBalancer: {}}`. A dry run shows the
/// real dry-run allocator's placeholder address.
pub fn complete(live: Option<&Value>, svc: &mut Value, dry_run: bool) {
    let spec = spec_mut(svc);
    let view = Value::Object(spec.clone());
    if !needs_cluster_ip(&view) {
        ensure_status(svc);
        return;
    }
    if let Some(old) = live.map(|l| &l["spec"]).filter(|o| needs_cluster_ip(o)) {
        for field in ["ipFamilies", "ipFamilyPolicy"] {
            if spec.get(field).is_none_or(Value::is_null) && !old[field].is_null() {
                spec.insert(field.into(), old[field].clone());
            }
        }
    }
    if dry_run && wants_address(&view) && cluster_ips(&view).is_empty() {
        spec.insert("clusterIP".into(), json!(clusterip::DRY_RUN));
        set_cluster_ips(spec, &[clusterip::DRY_RUN.to_string()]);
    }
    let selectorless = view["selector"].as_object().is_none_or(Map::is_empty);
    if spec.get("ipFamilyPolicy").is_none_or(Value::is_null) {
        let policy = if headless(&view) && selectorless {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        spec.insert("ipFamilyPolicy".into(), json!(policy));
    }
    if spec
        .get("ipFamilies")
        .is_none_or(|f| f.as_array().is_none_or(Vec::is_empty))
    {
        let families = if spec["ipFamilyPolicy"] == "RequireDualStack" {
            json!(["IPv4", "IPv6"])
        } else {
            json!(["IPv4"])
        };
        spec.insert("ipFamilies".into(), families);
    }
    ensure_status(svc);
}

fn ensure_status(svc: &mut Value) {
    if !svc["status"].is_object() {
        svc["status"] = json!({});
    }
    if !svc["status"]["loadBalancer"].is_object() {
        svc["status"]["loadBalancer"] = json!({});
    }
}

/// The IPv4 cluster IPs of the stored Services but `except`.
fn taken(store: &Store, slot: ResId, except: &ObjKey) -> HashSet<Ipv4Addr> {
    store
        .iter(slot, None)
        .filter(|o| ObjKey::of(slot, o) != *except)
        .flat_map(|o| cluster_ips(&o["spec"]))
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// Step 4, under the store lock: gives `svc` a free cluster IP when it
/// wants one and has none, or checks that the one it asks for is not
/// another Service's (422, as the real allocator answers).
pub fn allocate(
    store: &Store,
    res: &ResourceDef,
    key: &ObjKey,
    svc: &mut Value,
) -> Result<(), ApiError> {
    let spec = &svc["spec"];
    if !wants_address(spec) {
        return Ok(());
    }
    let ips = cluster_ips(spec);
    let stored = store.get(key);
    let own = stored
        .as_ref()
        .map(|s| cluster_ips(&s["spec"]))
        .unwrap_or_default();
    let taken = taken(store, key.res, key);
    match ips.first() {
        Some(ip) if own.first() == Some(ip) => Ok(()),
        Some(ip) => {
            let why = match ip.parse::<Ipv4Addr>() {
                Ok(v4) => clusterip::claim(v4, &taken),
                Err(_) => Err(Refused::OtherNetwork),
            };
            why.map_err(|why| ApiError::invalid(res, &key.name, vec![refused(&ips, ip, why)]))
        }
        None => {
            let ip = clusterip::pick(&taken).ok_or_else(|| {
                ApiError::internal(
                    "Internal error occurred: failed to allocate a serviceIP: range is full",
                )
            })?;
            let spec = spec_mut(svc);
            spec.insert("clusterIP".into(), json!(ip.to_string()));
            spec.insert("clusterIPs".into(), json!([ip.to_string()]));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::Registry;
    use crate::apiserver::store::EventType;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "ns"}, "spec": spec})
    }

    /// A create through steps 1 to 3.
    fn created(spec: Value) -> Value {
        let mut s = svc(spec);
        prepare(None, &mut s);
        complete(None, &mut s, false);
        s
    }

    #[test]
    fn defaults_of_a_create_as_the_real_server_sets_them() {
        // (spec sent, spec stored but the allocated address); the real
        // answers, tests/differential.rs and by hand on v1.37.
        let cases = [
            (
                json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
                json!({"selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                    "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                    "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}),
            ),
            (
                json!({"ports": [{"name": "x", "port": 81, "targetPort": "http"},
                    {"name": "y", "port": 82, "protocol": "UDP", "targetPort": 0}]}),
                json!({"ports": [{"name": "x", "port": 81, "targetPort": "http", "protocol": "TCP"},
                        {"name": "y", "port": 82, "protocol": "UDP", "targetPort": 82}],
                    "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                    "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}),
            ),
            (
                json!({"clusterIP": "None", "selector": {"a": "b"}, "ports": [{"port": 80}]}),
                json!({"clusterIP": "None", "clusterIPs": ["None"], "selector": {"a": "b"},
                    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                    "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                    "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}),
            ),
            (
                json!({"clusterIP": "None"}),
                json!({"clusterIP": "None", "clusterIPs": ["None"],
                    "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                    "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}),
            ),
            (
                json!({"type": "ExternalName", "externalName": "example.com"}),
                json!({"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "None"}),
            ),
            (
                json!({"type": "LoadBalancer", "ports": [{"port": 80}], "sessionAffinity": "ClientIP"}),
                json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                    "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                    "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
                    "allocateLoadBalancerNodePorts": true,
                    "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}),
            ),
        ];
        for (sent, want) in cases {
            let got = created(sent.clone());
            assert_eq!(got["spec"], want, "{sent}");
            assert_eq!(got["status"], json!({"loadBalancer": {}}), "{sent}");
            assert!(validate(None, &got).is_empty(), "{sent}");
        }
    }

    #[test]
    fn invalid_services_get_the_real_servers_causes() {
        // (spec, [(field, message)]): the real server's words (v1.37).
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (
                json!({"selector": {"a": "b"}}),
                vec![("spec.ports", "Required value")],
            ),
            (
                json!({"ports": [{"port": 80}, {"port": 81}]}),
                vec![
                    ("spec.ports[0].name", "Required value"),
                    ("spec.ports[1].name", "Required value"),
                ],
            ),
            (
                json!({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}),
                vec![("spec.ports[1].name", "Duplicate value: \"a\"")],
            ),
            (
                json!({"ports": [{"port": 0, "targetPort": 70000}]}),
                vec![
                    (
                        "spec.ports[0].port",
                        "Invalid value: 0: must be between 1 and 65535, inclusive",
                    ),
                    (
                        "spec.ports[0].targetPort",
                        "Invalid value: 70000: must be between 1 and 65535, inclusive",
                    ),
                ],
            ),
            (
                json!({"ports": [{"port": 80, "protocol": "HTTP", "name": "Http"}]}),
                vec![
                    (
                        "spec.ports[0].name",
                        "Invalid value: \"Http\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                    ),
                    (
                        "spec.ports[0].protocol",
                        "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                    ),
                ],
            ),
            (
                json!({"ports": [{"port": 80, "targetPort": "Not_A_Name"}]}),
                vec![(
                    "spec.ports[0].targetPort",
                    "Invalid value: \"Not_A_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                )],
            ),
            (
                json!({"type": "Foo", "ports": [{"port": 80}]}),
                vec![(
                    "spec.type",
                    "Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                )],
            ),
            (
                json!({"clusterIP": "foo", "ports": [{"port": 80}]}),
                vec![(
                    "spec.clusterIPs[0]",
                    "Invalid value: \"foo\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )],
            ),
            (
                json!({"type": "ExternalName"}),
                vec![("spec.externalName", "Required value")],
            ),
            (
                json!({"type": "ExternalName", "externalName": "x.example.com", "clusterIP": "10.96.3.3"}),
                vec![(
                    "spec.clusterIPs",
                    "Forbidden: may not be set for ExternalName services",
                )],
            ),
            (
                json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.21"], "ports": [{"port": 80}]}),
                vec![(
                    "spec.clusterIPs",
                    "Invalid value: [\"10.96.0.21\"]: first value must match `clusterIP`",
                )],
            ),
            (
                json!({"clusterIPs": ["10.96.0.21"], "ports": [{"port": 80}]}),
                vec![(
                    "spec.clusterIPs",
                    "Invalid value: [\"10.96.0.21\"]: must be empty when `clusterIP` is not specified",
                )],
            ),
            (
                json!({"clusterIP": "10.0.0.10", "ports": [{"port": 80}]}),
                vec![(
                    "spec.clusterIPs",
                    "Invalid value: [\"10.0.0.10\"]: failed to allocate IP 10.0.0.10: the provided network does not match the current range",
                )],
            ),
            (
                json!({"clusterIP": "10.96.0.0", "ports": [{"port": 80}]}),
                vec![(
                    "spec.clusterIPs",
                    "Invalid value: [\"10.96.0.0\"]: failed to allocate IP 10.96.0.0: the provided IP (10.96.0.0) is not in the valid range. The range of valid IPs is 10.96.0.0/12",
                )],
            ),
        ];
        for (spec, want) in cases {
            let mut s = svc(spec.clone());
            prepare(None, &mut s);
            let got: Vec<(String, String)> = validate(None, &s)
                .into_iter()
                .map(|c| (c.field, c.message))
                .collect();
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(f, m)| (f.to_string(), m.to_string()))
                .collect();
            assert_eq!(got, want, "{spec}");
        }
    }

    /// (what, the update as the server receives it, the real server's cause
    /// (field, message), or none when the address is kept).
    type UpdateCase = (&'static str, Value, Option<(&'static str, &'static str)>);

    #[test]
    fn updates_keep_what_was_allocated_and_may_not_move_it() {
        let mut live = created(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        live["spec"]["clusterIP"] = json!("10.100.0.7");
        live["spec"]["clusterIPs"] = json!(["10.100.0.7"]);
        let put = |spec: Value| svc(spec);
        let merged = |patch: Value| {
            let mut v = live.clone();
            json_patch::merge(&mut v, &json!({"spec": patch}));
            v
        };
        // PUTs carry what the client sent, merge patches the live object
        // with the patch applied.
        let cases: Vec<UpdateCase> = vec![
            (
                "PUT of selector and ports only",
                put(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})),
                None,
            ),
            (
                "merge patch clearing clusterIP",
                merged(json!({"clusterIP": null})),
                None,
            ),
            (
                "merge patch clearing both",
                merged(json!({"clusterIP": null, "clusterIPs": null})),
                None,
            ),
            (
                "PUT moving clusterIP",
                put(json!({"clusterIP": "10.96.5.5", "ports": [{"port": 80}]})),
                Some((
                    "spec.clusterIPs[0]",
                    "Invalid value: [\"10.96.5.5\"]: may not change once set",
                )),
            ),
            (
                "merge patch moving clusterIP",
                merged(json!({"clusterIP": "10.96.5.5"})),
                Some((
                    "spec.clusterIPs[0]",
                    "Invalid value: [\"10.96.5.5\"]: may not change once set",
                )),
            ),
            (
                "merge patch moving clusterIPs",
                merged(json!({"clusterIPs": ["10.96.5.5"]})),
                Some((
                    "spec.clusterIPs",
                    "Invalid value: [\"10.96.5.5\"]: first value must match `clusterIP`",
                )),
            ),
        ];
        for (what, mut new, want) in cases {
            prepare(Some(&live), &mut new);
            let got: Vec<(String, String)> = validate(Some(&live), &new)
                .into_iter()
                .map(|c| (c.field, c.message))
                .collect();
            match want {
                Some((field, message)) => {
                    assert_eq!(got, [(field.to_string(), message.to_string())], "{what}")
                }
                None => {
                    assert!(got.is_empty(), "{what}: {got:?}");
                    complete(Some(&live), &mut new, false);
                    assert_eq!(new["spec"], live["spec"], "{what}");
                }
            }
        }
        // To ExternalName: what came from the live object goes.
        let mut external = live.clone();
        external["spec"]["type"] = json!("ExternalName");
        external["spec"]["externalName"] = json!("db.example.com");
        prepare(Some(&live), &mut external);
        assert!(validate(Some(&live), &external).is_empty());
        complete(Some(&live), &mut external, false);
        for gone in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ] {
            assert!(external["spec"].get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn a_dry_run_shows_the_placeholder_address() {
        let mut s = svc(json!({"ports": [{"port": 80}]}));
        prepare(None, &mut s);
        complete(None, &mut s, true);
        assert_eq!(s["spec"]["clusterIP"], clusterip::DRY_RUN);
        assert_eq!(s["spec"]["clusterIPs"], json!([clusterip::DRY_RUN]));
    }

    #[test]
    fn allocation_is_unique_and_refuses_a_taken_address() {
        let reg = Registry::new(Vec::new());
        let res_id = reg.find("", "v1", "services").unwrap();
        let res = &reg.resources[res_id];
        let mut store = Store::new(reg.resources.len(), 100);
        let key = |name: &str| ObjKey {
            res: res_id,
            ns: "ns".into(),
            name: name.into(),
        };
        let mut seen = HashSet::new();
        for i in 0..50 {
            let name = format!("s{i}");
            let mut s = created(json!({"ports": [{"port": 80}]}));
            s["metadata"]["name"] = json!(name);
            allocate(&store, res, &key(&name), &mut s).unwrap();
            let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
            assert_eq!(s["spec"]["clusterIPs"], json!([ip]));
            assert!(seen.insert(ip), "unique");
            store.put(res_id, s, EventType::Added);
        }
        // Its own address again (an update) is fine; another's is not.
        let stored = store.get(&key("s1")).unwrap();
        let mut again = (*stored).clone();
        allocate(&store, res, &key("s1"), &mut again).unwrap();
        assert_eq!(again, *stored);
        let ip = stored["spec"]["clusterIP"].as_str().unwrap();
        let mut thief = created(json!({"clusterIP": ip, "ports": [{"port": 80}]}));
        let e = allocate(&store, res, &key("thief"), &mut thief).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.causes[0].message,
            format!(
                "Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"
            )
        );
        // Headless and ExternalName Services get none.
        for spec in [
            json!({"clusterIP": "None"}),
            json!({"type": "ExternalName", "externalName": "a.b"}),
        ] {
            let mut s = created(spec);
            let before = s.clone();
            allocate(&store, res, &key("other"), &mut s).unwrap();
            assert_eq!(s, before);
        }
    }

    #[test]
    fn server_side_apply_keys_ports_by_port_and_defaulted_protocol() {
        let schema = ssa_schema();
        let writer = ssa::Writer {
            manager: "mm",
            api_version: "v1",
            subresource: None,
            time: "2026-01-01T00:00:00Z",
        };
        let config = svc(json!({"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}));
        let mut live = ssa::apply_with_schema(&schema, None, &config, &writer, false).unwrap();
        prepare(None, &mut live);
        complete(None, &mut live, false);
        // The real server's record of this apply (v1.37).
        assert_eq!(
            live["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {
                "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {
                    ".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}}},
                "f:selector": {}}})
        );
        // Applying it again changes nothing: the port is the same item.
        let again = ssa::apply_with_schema(&schema, Some(&live), &config, &writer, false).unwrap();
        assert_eq!(again["spec"], live["spec"]);
        assert_eq!(
            again["metadata"]["managedFields"],
            live["metadata"]["managedFields"]
        );
    }
}
