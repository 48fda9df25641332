//! The mock's HTTP control routes, under `/_mock/` (no ARM or Entra ID path
//! starts so): what [`ArmControl`]'s methods do, as JSON over HTTPS, so the
//! mock can be driven from outside Rust (`meshmirror-testkit arm`). No token
//! is needed. Every answer is JSON; errors are `{"error": {"code",
//! "message"}}`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::cloud::{Launch, MockVm, Mode, ScaleSetSpec};
use super::{ArmControl, Grant, Shared};
use crate::gce::control::{
    Answer, Failure, bad, body, failure, ok, one_of, one_of_or_null, reply, string_map,
};

/// The routes, as `GET /_mock/` lists them.
const ROUTES: &[(&str, &str)] = &[
    ("GET /_mock/", "this list"),
    (
        "POST /_mock/scale-sets",
        "create a scale set: {subscription, resourceGroup, name, mode?: uniform|flexible, capacity?, zones?, location?, tags?, publicIp?, ipv6?, healthExtension?, launch?: running|creating}",
    ),
    (
        "GET /_mock/scale-sets",
        "every scale set, with its capacity",
    ),
    ("GET /_mock/scale-sets/NAME", "the scale set and its VMs"),
    (
        "POST /_mock/scale-sets/NAME/scale",
        "{capacity: n} or {by: +/-n}: new VMs are added, the newest removed at once",
    ),
    (
        "PATCH /_mock/scale-sets/NAME/vms/VM",
        "{powerState?, provisioningState?, health? (null: no extension), tags?}",
    ),
    (
        "DELETE /_mock/scale-sets/NAME/vms/VM",
        "the VM gets Deleting (listed until settle)",
    ),
    (
        "POST /_mock/standalone-vms",
        "a VM of a resource group in no scale set: {subscription, resourceGroup, name}",
    ),
    (
        "POST /_mock/settle",
        "finish transitions: Deleting VMs go, Creating ones run",
    ),
    (
        "POST /_mock/faults",
        "{throttle: {retryAfterSecs}} or {status, code, message}; count?: the next ARM requests fail",
    ),
    ("DELETE /_mock/faults", "drop pending faults"),
    (
        "PUT /_mock/page-size",
        "{size}: items per page of every list",
    ),
    (
        "GET /_mock/requests",
        "requests by operation since start or reset",
    ),
    ("DELETE /_mock/requests", "reset the counts"),
    (
        "POST /_mock/clients",
        "a service principal: {tenantId, clientId, secret} or {tenantId, clientId, federatedToken}",
    ),
    (
        "PUT /_mock/require-issued-tokens",
        "{on}: ARM accepts only tokens the mock issued",
    ),
    ("GET /_mock/token-grants", "the tokens issued"),
];

const POWER_STATES: &[&str] = &[
    "starting",
    "running",
    "stopping",
    "stopped",
    "deallocating",
    "deallocated",
];
const PROVISIONING_STATES: &[&str] = &["Creating", "Succeeded", "Updating", "Deleting", "Failed"];
const HEALTH_STATES: &[&str] = &["healthy", "unhealthy", "initializing", "unknown"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateSet {
    subscription: String,
    resource_group: String,
    name: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    capacity: u32,
    #[serde(default)]
    zones: Vec<String>,
    location: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    public_ip: bool,
    #[serde(default)]
    ipv6: bool,
    #[serde(default)]
    health_extension: bool,
    launch: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Scale {
    capacity: Option<u32>,
    by: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Standalone {
    subscription: String,
    resource_group: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Throttle {
    retry_after_secs: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultBody {
    throttle: Option<Throttle>,
    status: Option<u16>,
    code: Option<String>,
    message: Option<String>,
    count: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PageSize {
    size: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Client {
    tenant_id: String,
    client_id: String,
    secret: Option<String>,
    federated_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct On {
    on: bool,
}

pub(super) async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    bytes: Bytes,
) -> Response {
    let mock = ArmControl { shared };
    let path = uri.path();
    let rest = path.strip_prefix("/_mock").unwrap_or(path);
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    reply(route(&mock, &method, &segs, &bytes))
}

fn route(mock: &ArmControl, method: &Method, segs: &[&str], bytes: &Bytes) -> Answer {
    match (method, segs) {
        (&Method::GET, []) => ok(json!({
            "routes": ROUTES
                .iter()
                .map(|(route, what)| json!({"route": route, "does": what}))
                .collect::<Vec<_>>(),
        })),
        (&Method::POST, ["scale-sets"]) => create_set(mock, body(bytes)?),
        (&Method::GET, ["scale-sets"]) => ok(json!({
            "scaleSets": mock
                .scale_sets()
                .iter()
                .map(|spec| json!({
                    "name": spec.name,
                    "id": spec.id(),
                    "mode": mode_name(spec.mode),
                    "capacity": spec.capacity,
                }))
                .collect::<Vec<_>>(),
        })),
        (&Method::GET, ["scale-sets", set]) => set_view(mock, set),
        (&Method::POST, ["scale-sets", set, "scale"]) => {
            let spec = mock.scale_set(set).ok_or_else(|| set_not_found(set))?;
            let capacity = match body::<Scale>(bytes)? {
                Scale {
                    capacity: Some(capacity),
                    by: None,
                } => capacity,
                Scale {
                    capacity: None,
                    by: Some(by),
                } => u32::try_from(i64::from(spec.capacity).saturating_add(by).max(0))
                    .map_err(|_| bad("capacity out of range"))?,
                _ => {
                    return Err(bad(
                        "give one of capacity (the new capacity) or by (+n or -n)",
                    ));
                }
            };
            if !mock.try_scale(set, capacity) {
                return Err(set_not_found(set));
            }
            set_view(mock, set)
        }
        (&Method::PATCH, ["scale-sets", set, "vms", vm]) => patch_vm(mock, set, vm, body(bytes)?),
        (&Method::DELETE, ["scale-sets", set, "vms", vm]) => {
            if !mock.has_scale_set(set) {
                return Err(set_not_found(set));
            }
            if !mock.try_delete_vm(set, vm) {
                return Err(vm_not_found(set, vm));
            }
            vm_answer(mock, set, vm)
        }
        (&Method::POST, ["standalone-vms"]) => {
            let Standalone {
                subscription,
                resource_group,
                name,
            } = body(bytes)?;
            mock.add_standalone_vm(&subscription, &resource_group, &name);
            Ok((
                StatusCode::CREATED,
                json!({"subscription": subscription, "resourceGroup": resource_group, "name": name}),
            ))
        }
        (&Method::POST, ["settle"]) => {
            mock.settle();
            ok(json!({}))
        }
        (&Method::POST, ["faults"]) => {
            let fault: FaultBody = body(bytes)?;
            let count = fault.count.unwrap_or(1);
            match fault {
                FaultBody {
                    throttle: Some(Throttle { retry_after_secs }),
                    status: None,
                    code: None,
                    message: None,
                    ..
                } => mock.throttle_next(count, retry_after_secs),
                FaultBody {
                    throttle: None,
                    status: Some(status),
                    code,
                    message,
                    ..
                } => {
                    if !(400..=599).contains(&status) {
                        return Err(bad(format!("status {status}: 400 to 599")));
                    }
                    let code = code.unwrap_or_else(|| "InternalServerError".into());
                    let message = message.unwrap_or_else(|| "Injected by the mock.".into());
                    for _ in 0..count {
                        mock.fail_next(status, &code, &message);
                    }
                }
                _ => {
                    return Err(bad(
                        "give throttle: {retryAfterSecs} or status (with code and message)",
                    ));
                }
            }
            ok(json!({"pending": mock.lock().faults.len()}))
        }
        (&Method::DELETE, ["faults"]) => {
            mock.clear_faults();
            ok(json!({"pending": 0}))
        }
        (&Method::PUT, ["page-size"]) => {
            let PageSize { size } = body(bytes)?;
            mock.set_page_size(size);
            ok(json!({"size": mock.lock().page_size}))
        }
        (&Method::GET, ["requests"]) => ok(json!({
            "arm": mock.arm_requests(),
            "byOperation": mock.requests(),
        })),
        (&Method::DELETE, ["requests"]) => {
            mock.reset_requests();
            ok(json!({"arm": 0, "byOperation": {}}))
        }
        (&Method::POST, ["clients"]) => {
            let client: Client = body(bytes)?;
            match (&client.secret, &client.federated_token) {
                (Some(secret), None) => {
                    mock.register_client_secret(&client.tenant_id, &client.client_id, secret);
                }
                (None, Some(token)) => {
                    mock.register_federated(&client.tenant_id, &client.client_id, token);
                }
                _ => return Err(bad("give one of secret or federatedToken")),
            }
            Ok((
                StatusCode::CREATED,
                json!({"tenantId": client.tenant_id, "clientId": client.client_id}),
            ))
        }
        (&Method::PUT, ["require-issued-tokens"]) => {
            let On { on } = body(bytes)?;
            mock.require_issued_tokens(on);
            ok(json!({"on": on}))
        }
        (&Method::GET, ["token-grants"]) => ok(json!({
            "grants": mock
                .token_grants()
                .into_iter()
                .map(|g| json!({
                    "tenantId": g.tenant,
                    "clientId": g.client_id,
                    "grant": match g.grant {
                        Grant::ClientSecret => "clientSecret",
                        Grant::Assertion => "federated",
                    },
                    "scope": g.scope,
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

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Uniform => "Uniform",
        Mode::Flexible => "Flexible",
    }
}

fn set_not_found(set: &str) -> Failure {
    failure(StatusCode::NOT_FOUND, format!("no scale set {set}"))
}

fn vm_not_found(set: &str, vm: &str) -> Failure {
    failure(StatusCode::NOT_FOUND, format!("no VM {vm} in {set}"))
}

/// ARM names: letters, digits, `-`, `_`, `.` (what the mock's paths hold).
fn check_name(what: &str, name: &str) -> Result<(), Failure> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fine {
        Ok(())
    } else {
        Err(bad(format!(
            "{what} {name:?}: letters, digits, '-', '_' or '.', 64 at most"
        )))
    }
}

fn create_set(mock: &ArmControl, create: CreateSet) -> Answer {
    check_name("subscription", &create.subscription)?;
    check_name("resourceGroup", &create.resource_group)?;
    check_name("name", &create.name)?;
    if mock.has_scale_set(&create.name) {
        return Err(failure(
            StatusCode::CONFLICT,
            format!(
                "scale set {} exists (names are unique in the mock)",
                create.name
            ),
        ));
    }
    let mut spec = match create
        .mode
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("uniform") => {
            ScaleSetSpec::uniform(&create.subscription, &create.resource_group, &create.name)
        }
        Some("flexible") => {
            ScaleSetSpec::flexible(&create.subscription, &create.resource_group, &create.name)
        }
        Some(other) => return Err(bad(format!("mode {other:?}: uniform or flexible"))),
    };
    spec = spec.capacity(create.capacity);
    spec.zones = create.zones;
    spec.tags = create.tags;
    if let Some(location) = create.location {
        spec.location = location;
    }
    spec.public_ip = create.public_ip;
    spec.ipv6 = create.ipv6;
    spec.health_extension = create.health_extension;
    spec.launch = match create.launch.as_deref() {
        None | Some("running") => Launch::Running,
        Some("creating") => Launch::Creating,
        Some(other) => return Err(bad(format!("launch {other:?}: running or creating"))),
    };
    let name = spec.name.clone();
    mock.create_scale_set(spec);
    let (_, view) = set_view(mock, &name)?;
    Ok((StatusCode::CREATED, view))
}

fn patch_vm(mock: &ArmControl, set: &str, vm: &str, patch: Map<String, Value>) -> Answer {
    if !mock.has_scale_set(set) {
        return Err(set_not_found(set));
    }
    // Checked whole before anything changes.
    let power = one_of(&patch, "powerState", POWER_STATES)?;
    let provisioning = one_of(&patch, "provisioningState", PROVISIONING_STATES)?;
    let health = one_of_or_null(&patch, "health", HEALTH_STATES)?;
    let tags = string_map(&patch, "tags")?;
    if let Some(unknown) = patch.keys().find(|k| {
        !matches!(
            k.as_str(),
            "powerState" | "provisioningState" | "health" | "tags"
        )
    }) {
        return Err(bad(format!(
            "unknown field {unknown}: powerState, provisioningState, health, tags"
        )));
    }
    let found = mock.try_update_vm(set, vm, |v| {
        if let Some(power) = power {
            v.power_state = power;
        }
        if let Some(provisioning) = provisioning {
            v.provisioning_state = provisioning;
        }
        if let Some(health) = health {
            v.health = health;
        }
        if let Some(tags) = tags {
            v.tags = tags;
        }
    });
    if !found {
        return Err(vm_not_found(set, vm));
    }
    vm_answer(mock, set, vm)
}

fn vm_view(mock: &ArmControl, set: &str, vm: &MockVm) -> Value {
    json!({
        "name": vm.name,
        "id": mock.try_vm_id(set, &vm.name),
        "instanceId": vm.instance_id,
        "vmId": vm.vm_id,
        "provisioningState": vm.provisioning_state,
        "powerState": vm.power_state,
        "health": vm.health,
        "zone": vm.zone,
        "tags": vm.tags,
        "privateIPv4": vm.private_ipv4.to_string(),
        "publicIPv4": vm.public_ipv4.map(|ip| ip.to_string()),
        "ipv6": vm.ipv6.map(|ip| ip.to_string()),
    })
}

fn vm_answer(mock: &ArmControl, set: &str, name: &str) -> Answer {
    let vm = mock
        .vms(set)
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| vm_not_found(set, name))?;
    ok(vm_view(mock, set, &vm))
}

fn set_view(mock: &ArmControl, set: &str) -> Answer {
    let spec = mock.scale_set(set).ok_or_else(|| set_not_found(set))?;
    let vms = mock.vms(set);
    ok(json!({
        "subscription": spec.subscription,
        "resourceGroup": spec.resource_group,
        "name": spec.name,
        "id": spec.id(),
        "mode": mode_name(spec.mode),
        "location": spec.location,
        "zones": spec.zones,
        "tags": spec.tags,
        "capacity": spec.capacity,
        "vms": vms.iter().map(|vm| vm_view(mock, set, vm)).collect::<Vec<_>>(),
    }))
}
