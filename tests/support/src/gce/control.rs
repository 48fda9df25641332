//! The mock's HTTP control routes, under `/_mock/` (no Compute Engine path
//! starts so): what [`GceControl`]'s methods do, as JSON over HTTP, so the
//! mock can be driven from outside Rust (`meshmirror-testkit gce`). Every
//! answer is JSON; errors are `{"error": {"code", "message"}}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::state::{MigKey, Scope, Template, Vm};
use super::{Fault, GceControl, Shared, lock, render};

/// The routes, as `GET /_mock/` lists them.
const ROUTES: &[(&str, &str)] = &[
    ("GET /_mock/", "this list"),
    (
        "POST /_mock/projects/P/zones/Z/groups",
        "create a zonal group: {name, size?, template?}",
    ),
    (
        "POST /_mock/projects/P/regions/R/groups",
        "create a regional group: {name, zones: [..], size?, template?}",
    ),
    ("GET /_mock/groups", "every group, with its size"),
    (
        "GET /_mock/projects/P/zones|regions/S/groups/NAME",
        "the group and its instances",
    ),
    (
        "POST /_mock/projects/P/zones|regions/S/groups/NAME/resize",
        "{size: n} or {by: +/-n}: new VMs run at once, the surplus is DELETING until settle",
    ),
    (
        "POST /_mock/projects/P/zones|regions/S/groups/NAME/delete-instances",
        "{instances: [names]}: they get DELETING",
    ),
    (
        "POST /_mock/projects/P/zones/Z/instances",
        "a VM no group manages: {name, template?}",
    ),
    (
        "PUT /_mock/projects/P/zones/Z",
        "a zone without VMs (aggregated lists show it)",
    ),
    ("GET /_mock/instances/NAME", "one VM"),
    (
        "PATCH /_mock/instances/NAME",
        "{status?, action?, health? (null: none), labels?, provisioned?: false, listed?: bool (false: instance listings miss it)}",
    ),
    (
        "POST /_mock/settle",
        "finish pending actions: DELETING VMs go, the rest run",
    ),
    (
        "POST /_mock/faults",
        "{fault: tooManyRequests|rateLimitExceeded|serverError, code?, count?}: the next API calls fail",
    ),
    ("DELETE /_mock/faults", "drop pending faults"),
    (
        "PUT /_mock/max-page-size",
        "{size}: the largest page served",
    ),
    (
        "GET /_mock/counts",
        "API calls by method since start or reset",
    ),
    ("DELETE /_mock/counts", "reset the counts"),
    ("GET /_mock/requests", "every API call recorded"),
];

/// `instances.status` values.
const STATUSES: &[&str] = &[
    "PROVISIONING",
    "STAGING",
    "RUNNING",
    "STOPPING",
    "STOPPED",
    "SUSPENDING",
    "SUSPENDED",
    "REPAIRING",
    "TERMINATED",
];
/// `managedInstances.currentAction` values.
const ACTIONS: &[&str] = &[
    "NONE",
    "CREATING",
    "CREATING_WITHOUT_RETRIES",
    "VERIFYING",
    "RECREATING",
    "DELETING",
    "ABANDONING",
    "RESTARTING",
    "REFRESHING",
    "RESUMING",
    "STARTING",
    "STOPPING",
    "SUSPENDING",
];
/// `instanceHealth.detailedHealthState` values.
const HEALTH_STATES: &[&str] = &["HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "UNKNOWN"];

/// An answer that is not the happy path (shared with the ARM mock's
/// control routes).
pub(crate) struct Failure(pub StatusCode, pub String);

pub(crate) type Answer = Result<(StatusCode, Value), Failure>;

pub(crate) fn failure(status: StatusCode, message: impl Into<String>) -> Failure {
    Failure(status, message.into())
}

pub(crate) fn bad(message: impl Into<String>) -> Failure {
    failure(StatusCode::BAD_REQUEST, message)
}

pub(crate) fn ok(value: Value) -> Answer {
    Ok((StatusCode::OK, value))
}

pub(crate) fn reply(answer: Answer) -> Response {
    let (status, body) = match answer {
        Ok(ok) => ok,
        Err(Failure(status, message)) => (
            status,
            json!({"error": {"code": status.as_u16(), "message": message}}),
        ),
    };
    (status, axum::Json(body)).into_response()
}

/// The body as `T`; an empty body is `{}`.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Failure> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| bad(format!("body: {e}")))
}

/// `patch[field]`, which must be one of `allowed` when present.
pub(crate) fn one_of(
    patch: &Map<String, Value>,
    field: &str,
    allowed: &[&str],
) -> Result<Option<String>, Failure> {
    match patch.get(field) {
        None => Ok(None),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!("{field}: one of {allowed:?}, not {other}"))),
    }
}

/// `patch[field]` as [`one_of`], where null clears: `Some(None)`.
pub(crate) fn one_of_or_null(
    patch: &Map<String, Value>,
    field: &str,
    allowed: &[&str],
) -> Result<Option<Option<String>>, Failure> {
    match patch.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(Some(s.clone()))),
        Some(other) => Err(bad(format!(
            "{field}: one of {allowed:?} or null, not {other}"
        ))),
    }
}

/// `patch[field]`, an object of strings, when present.
pub(crate) fn string_map(
    patch: &Map<String, Value>,
    field: &str,
) -> Result<Option<BTreeMap<String, String>>, Failure> {
    patch
        .get(field)
        .map(|v| {
            serde_json::from_value(v.clone())
                .map_err(|e| bad(format!("{field}: an object of strings ({e})")))
        })
        .transpose()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TemplateBody {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    public_ip: bool,
    #[serde(default)]
    ipv6: bool,
    #[serde(default)]
    external_ipv6: bool,
    health: Option<String>,
}

impl TemplateBody {
    fn checked(self) -> Result<Template, Failure> {
        if let Some(health) = self
            .health
            .as_deref()
            .filter(|h| !HEALTH_STATES.contains(h))
        {
            return Err(bad(format!(
                "template.health: one of {HEALTH_STATES:?}, not {health:?}"
            )));
        }
        Ok(self.into())
    }
}

impl From<TemplateBody> for Template {
    fn from(t: TemplateBody) -> Template {
        Template {
            labels: t.labels,
            public_ip: t.public_ip,
            ipv6: t.ipv6,
            external_ipv6: t.external_ipv6,
            health: t.health,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateGroup {
    name: String,
    /// Regional groups only.
    zones: Option<Vec<String>>,
    #[serde(default)]
    size: usize,
    #[serde(default)]
    template: TemplateBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Resize {
    size: Option<usize>,
    by: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Names {
    instances: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateVm {
    name: String,
    #[serde(default)]
    template: TemplateBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultBody {
    fault: String,
    code: Option<u16>,
    #[serde(default = "one")]
    count: usize,
}

fn one() -> usize {
    1
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PageSize {
    size: usize,
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    bytes: Bytes,
) -> Response {
    let mock = GceControl { shared };
    let path = uri.path();
    let rest = path.strip_prefix("/_mock").unwrap_or(path);
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    reply(route(&mock, &method, &segs, &bytes))
}

fn route(mock: &GceControl, method: &Method, segs: &[&str], bytes: &Bytes) -> Answer {
    match (method, segs) {
        (&Method::GET, []) => ok(json!({
            "routes": ROUTES
                .iter()
                .map(|(route, what)| json!({"route": route, "does": what}))
                .collect::<Vec<_>>(),
        })),
        (
            &Method::POST,
            [
                "projects",
                project,
                kind @ ("zones" | "regions"),
                scope,
                "groups",
            ],
        ) => create_group(mock, project, kind, scope, body(bytes)?),
        (&Method::GET, ["groups"]) => ok(json!({"groups": groups(mock)})),
        (
            &Method::GET,
            [
                "projects",
                project,
                kind @ ("zones" | "regions"),
                scope,
                "groups",
                name,
            ],
        ) => {
            let key = group_key(mock, project, kind, scope, name)?;
            ok(group_view(mock, &key))
        }
        (
            &Method::POST,
            [
                "projects",
                project,
                kind @ ("zones" | "regions"),
                scope,
                "groups",
                name,
                "resize",
            ],
        ) => {
            let key = group_key(mock, project, kind, scope, name)?;
            let size = match body::<Resize>(bytes)? {
                Resize {
                    size: Some(size),
                    by: None,
                } => size,
                Resize {
                    size: None,
                    by: Some(by),
                } => {
                    let live = mock
                        .members(&key)
                        .iter()
                        .filter(|vm| vm.action != "DELETING")
                        .count();
                    usize::try_from((live as i64).saturating_add(by)).unwrap_or(0)
                }
                _ => return Err(bad("give one of size (the new size) or by (+n or -n)")),
            };
            let changed = mock
                .try_resize(&key, size)
                .ok_or_else(|| group_not_found(&key))?;
            ok(json!({"changed": changed, "group": group_view(mock, &key)}))
        }
        (
            &Method::POST,
            [
                "projects",
                project,
                kind @ ("zones" | "regions"),
                scope,
                "groups",
                name,
                "delete-instances",
            ],
        ) => {
            let key = group_key(mock, project, kind, scope, name)?;
            let Names { instances } = body(bytes)?;
            let members = mock.members(&key);
            if let Some(stranger) = instances
                .iter()
                .find(|n| !members.iter().any(|vm| &vm.name == *n))
            {
                return Err(failure(
                    StatusCode::NOT_FOUND,
                    format!(
                        "{stranger} is not a member of {}",
                        render::mig_url("", &key)
                    ),
                ));
            }
            let names: Vec<&str> = instances.iter().map(String::as_str).collect();
            mock.delete_instances(&names);
            ok(group_view(mock, &key))
        }
        (&Method::POST, ["projects", project, "zones", zone, "instances"]) => {
            let CreateVm { name, template } = body(bytes)?;
            check_name(&name)?;
            if mock.vm(&name).is_some() {
                return Err(failure(
                    StatusCode::CONFLICT,
                    format!("a VM named {name} exists (names are unique in the mock)"),
                ));
            }
            mock.add_vm(project, zone, &name, &template.checked()?);
            let vm = mock.vm(&name).ok_or_else(|| vm_not_found(&name))?;
            Ok((StatusCode::CREATED, vm_view(&vm)))
        }
        (&Method::PUT, ["projects", project, "zones", zone]) => {
            mock.add_zone(project, zone);
            ok(json!({"project": project, "zone": zone}))
        }
        (&Method::GET, ["instances", name]) => {
            let vm = mock.vm(name).ok_or_else(|| vm_not_found(name))?;
            ok(vm_view(&vm))
        }
        (&Method::PATCH, ["instances", name]) => patch_vm(mock, name, body(bytes)?),
        (&Method::POST, ["settle"]) => {
            mock.settle();
            ok(json!({}))
        }
        (&Method::POST, ["faults"]) => {
            let FaultBody { fault, code, count } = body(bytes)?;
            let fault = match (fault.as_str(), code) {
                ("tooManyRequests", None) => Fault::TooManyRequests,
                ("rateLimitExceeded", None) => Fault::RateLimitExceeded,
                ("serverError", code) => {
                    let code = code.unwrap_or(503);
                    if !(500..=599).contains(&code) {
                        return Err(bad(format!("serverError code {code}: 500 to 599")));
                    }
                    Fault::ServerError(code)
                }
                ("tooManyRequests" | "rateLimitExceeded", Some(_)) => {
                    return Err(bad("code goes with serverError only"));
                }
                (other, _) => {
                    return Err(bad(format!(
                        "fault {other:?}: tooManyRequests, rateLimitExceeded or serverError"
                    )));
                }
            };
            mock.fail_next(count, fault);
            ok(json!({"pending": lock(&mock.shared.faults).len()}))
        }
        (&Method::DELETE, ["faults"]) => {
            mock.clear_faults();
            ok(json!({"pending": 0}))
        }
        (&Method::PUT, ["max-page-size"]) => {
            let PageSize { size } = body(bytes)?;
            mock.set_max_page_size(size);
            ok(json!({"size": *lock(&mock.shared.max_page)}))
        }
        (&Method::GET, ["counts"]) => ok(json!({
            "total": mock.total_calls(),
            "byMethod": mock.counts(),
        })),
        (&Method::DELETE, ["counts"]) => {
            mock.reset_counts();
            ok(json!({"total": 0, "byMethod": {}}))
        }
        (&Method::GET, ["requests"]) => ok(json!({
            "requests": mock
                .requests()
                .into_iter()
                .map(|r| json!({
                    "method": r.method,
                    "path": r.path,
                    "query": r.query,
                    "operation": r.operation,
                }))
                .collect::<Vec<_>>(),
        })),
        _ => Err(failure(
            StatusCode::NOT_FOUND,
            format!(
                "no control route {method} /_mock/{}; GET /_mock/ lists them",
                segs.join("/")
            ),
        )),
    }
}

fn key_of(project: &str, kind: &str, scope: &str, name: &str) -> MigKey {
    if kind == "zones" {
        MigKey::zonal(project, scope, name)
    } else {
        MigKey::regional(project, scope, name)
    }
}

fn group_not_found(key: &MigKey) -> Failure {
    failure(
        StatusCode::NOT_FOUND,
        format!("no group {}", render::mig_url("", key)),
    )
}

fn vm_not_found(name: &str) -> Failure {
    failure(StatusCode::NOT_FOUND, format!("no VM named {name}"))
}

fn group_key(
    mock: &GceControl,
    project: &str,
    kind: &str,
    scope: &str,
    name: &str,
) -> Result<MigKey, Failure> {
    let key = key_of(project, kind, scope, name);
    if mock.has_group(&key) {
        Ok(key)
    } else {
        Err(group_not_found(&key))
    }
}

/// Compute Engine names: a lowercase letter, then lowercase letters, digits
/// and hyphens, 63 at most, not ending in a hyphen.
fn check_name(name: &str) -> Result<(), Failure> {
    let fine = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if fine {
        Ok(())
    } else {
        Err(bad(format!(
            "name {name:?}: a lowercase letter, then lowercase letters, digits or '-', 63 at most"
        )))
    }
}

fn create_group(
    mock: &GceControl,
    project: &str,
    kind: &str,
    scope: &str,
    create: CreateGroup,
) -> Answer {
    let CreateGroup {
        name,
        zones,
        size,
        template,
    } = create;
    check_name(&name)?;
    let template = template.checked()?;
    let key = key_of(project, kind, scope, &name);
    if mock.has_group(&key) {
        return Err(failure(
            StatusCode::CONFLICT,
            format!("group {} exists", render::mig_url("", &key)),
        ));
    }
    match (kind, zones) {
        ("zones", None) => {
            mock.add_zonal_group(project, scope, &name, template);
        }
        ("zones", Some(_)) => {
            return Err(bad(
                "a zonal group lives in the zone of its path: no zones field",
            ));
        }
        (_, Some(zones)) if !zones.is_empty() => {
            let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
            mock.add_regional_group(project, scope, &zones, &name, template);
        }
        _ => return Err(bad("a regional group needs zones: [\"R-a\", ...]")),
    }
    mock.try_resize(&key, size)
        .ok_or_else(|| group_not_found(&key))?;
    Ok((StatusCode::CREATED, group_view(mock, &key)))
}

fn patch_vm(mock: &GceControl, name: &str, patch: Map<String, Value>) -> Answer {
    if mock.vm(name).is_none() {
        return Err(vm_not_found(name));
    }
    // Checked whole before anything changes.
    let status = one_of(&patch, "status", STATUSES)?;
    let action = one_of(&patch, "action", ACTIONS)?;
    let health = one_of_or_null(&patch, "health", HEALTH_STATES)?;
    let labels = string_map(&patch, "labels")?;
    let unprovision = match patch.get("provisioned") {
        None => false,
        Some(Value::Bool(false)) => true,
        Some(_) => {
            return Err(bad(
                "provisioned: false only (the group is still creating the VM); settle provisions it",
            ));
        }
    };
    let listed = match patch.get("listed") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(bad("listed: true or false")),
    };
    if let Some(unknown) = patch.keys().find(|k| {
        !matches!(
            k.as_str(),
            "status" | "action" | "health" | "labels" | "provisioned" | "listed"
        )
    }) {
        return Err(bad(format!(
            "unknown field {unknown}: status, action, health, labels, provisioned, listed"
        )));
    }
    if unprovision {
        mock.set_unprovisioned(name);
    }
    if let Some(listed) = listed {
        mock.set_listed(name, listed);
    }
    if let Some(status) = status {
        mock.set_status(name, &status);
    }
    if let Some(action) = action {
        mock.set_action(name, &action);
    }
    if let Some(health) = health {
        mock.set_health(name, health.as_deref());
    }
    if let Some(labels) = labels {
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        mock.set_labels(name, &pairs);
    }
    let vm = mock.vm(name).ok_or_else(|| vm_not_found(name))?;
    ok(vm_view(&vm))
}

fn vm_view(vm: &Vm) -> Value {
    json!({
        "name": vm.name,
        "project": vm.project,
        "zone": vm.zone,
        "id": vm.id.to_string(),
        "status": vm.status,
        "action": vm.action,
        "provisioned": vm.provisioned,
        "listed": vm.listed,
        "health": vm.health,
        "labels": vm.labels,
        "networkIP": vm.network_ip.to_string(),
        "natIP": vm.nat_ip.map(|ip| ip.to_string()),
        "ipv6": vm.ipv6.map(|ip| ip.to_string()),
        "externalIpv6": vm.external_ipv6.map(|ip| ip.to_string()),
        "group": vm.mig.as_ref().map(|key| render::mig_url("", key)),
    })
}

fn scope_fields(key: &MigKey, out: &mut Value) {
    match &key.scope {
        Scope::Zone(zone) => out["zone"] = json!(zone),
        Scope::Region(region) => out["region"] = json!(region),
    }
}

fn group_view(mock: &GceControl, key: &MigKey) -> Value {
    let members = mock.members(key);
    let mut out = json!({
        "project": key.project,
        "name": key.name,
        "zones": mock.group_zones(key).unwrap_or_default(),
        "selfLink": render::mig_url(&mock.base_url(), key),
        "targetSize": members.iter().filter(|vm| vm.action != "DELETING").count(),
        "instances": members.iter().map(vm_view).collect::<Vec<_>>(),
    });
    scope_fields(key, &mut out);
    out
}

fn groups(mock: &GceControl) -> Vec<Value> {
    let keys: Vec<MigKey> = lock(&mock.shared.world).migs.keys().cloned().collect();
    keys.iter()
        .map(|key| {
            let mut out = json!({
                "project": key.project,
                "name": key.name,
                "selfLink": render::mig_url(&mock.base_url(), key),
                "targetSize": mock
                    .members(key)
                    .iter()
                    .filter(|vm| vm.action != "DELETING")
                    .count(),
            });
            scope_fields(key, &mut out);
            out
        })
        .collect()
}
