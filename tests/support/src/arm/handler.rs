//! Routing of the ARM mock: ARM paths are long and case-insensitive, so one
//! fallback handler parses them.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::cloud::{Mode, ScaleSetSpec};
use super::{ArmFault, Grant, Shared, TokenGrant, render};

/// A list item rendered only when its page is asked for.
type Lazy<'a> = Box<dyn FnOnce() -> Value + 'a>;

fn lazy<'a>(render: impl FnOnce() -> Value + 'a) -> Lazy<'a> {
    Box::new(render)
}

/// The ARM and token routes, and the mock's own control routes under
/// `/_mock/` (no ARM or Entra ID path starts so).
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/_mock", axum::routing::any(super::control::handle))
        .route("/_mock/", axum::routing::any(super::control::handle))
        .route("/_mock/{*rest}", axum::routing::any(super::control::handle))
        .fallback(handle)
        .with_state(shared)
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

fn arm_error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(render::error(code, message))).into_response()
}

fn ok(value: Value, extra: HeaderMap) -> Response {
    (StatusCode::OK, extra, axum::Json(value)).into_response()
}

pub(super) async fn handle(State(s): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let segs: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    if parts.method == Method::POST
        && segs.len() == 4
        && segs[1] == "oauth2"
        && segs[2] == "v2.0"
        && segs[3] == "token"
    {
        return token(&s, &segs[0], &body);
    }
    arm(
        &s,
        &parts.method,
        &path,
        &segs,
        &query,
        &parts.headers,
        &body,
    )
}

/// What an ARM path names.
#[derive(Debug)]
enum Route {
    Set { set: String, tail: SetTail },
    Rg { kind: RgKind, name: Option<String> },
}

#[derive(Debug)]
enum SetTail {
    Itself,
    Vms,
    Vm(String),
    /// One VM's NICs (`.../virtualMachines/N/networkInterfaces`).
    VmNics(String),
    /// One public IP of a VM's NIC's IP configuration:
    /// `.../virtualMachines/N/networkInterfaces/NIC/ipConfigurations/IPC/publicIPAddresses/PIP`.
    VmPip {
        instance: String,
        nic: String,
        pip: String,
    },
    DeleteInstances,
    Nics,
    Pips,
}

#[derive(Debug, PartialEq)]
enum RgKind {
    Vms,
    Nics,
    Pips,
}

fn route(segs: &[String]) -> Option<(String, String, Route)> {
    let is = |i: usize, w: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    if !(is(0, "subscriptions") && is(2, "resourceGroups") && is(4, "providers")) {
        return None;
    }
    let (sub, rg) = (segs[1].clone(), segs[3].clone());
    let r = if is(5, "Microsoft.Compute") && is(6, "virtualMachineScaleSets") {
        let set = segs.get(7)?.clone();
        let tail = match segs.len() {
            8 => SetTail::Itself,
            9 if is(8, "virtualMachines") => SetTail::Vms,
            9 if is(8, "delete") => SetTail::DeleteInstances,
            9 if is(8, "networkInterfaces") => SetTail::Nics,
            9 if is(8, "publicIPAddresses") => SetTail::Pips,
            10 if is(8, "virtualMachines") => SetTail::Vm(segs[9].clone()),
            11 if is(8, "virtualMachines") && is(10, "networkInterfaces") => {
                SetTail::VmNics(segs[9].clone())
            }
            16 if is(8, "virtualMachines")
                && is(10, "networkInterfaces")
                && is(12, "ipConfigurations")
                && is(14, "publicIPAddresses") =>
            {
                SetTail::VmPip {
                    instance: segs[9].clone(),
                    nic: segs[11].clone(),
                    pip: segs[15].clone(),
                }
            }
            _ => return None,
        };
        Route::Set { set, tail }
    } else {
        let kind = if is(5, "Microsoft.Compute") && is(6, "virtualMachines") {
            RgKind::Vms
        } else if is(5, "Microsoft.Network") && is(6, "networkInterfaces") {
            RgKind::Nics
        } else if is(5, "Microsoft.Network") && is(6, "publicIPAddresses") {
            RgKind::Pips
        } else {
            return None;
        };
        match segs.len() {
            7 => Route::Rg { kind, name: None },
            8 => Route::Rg {
                kind,
                name: Some(segs[7].clone()),
            },
            _ => return None,
        }
    };
    Some((sub, rg, r))
}

fn operation(method: &Method, r: &Route) -> &'static str {
    match (r, method) {
        (
            Route::Set {
                tail: SetTail::Itself,
                ..
            },
            &Method::GET,
        ) => "vmss.get",
        (
            Route::Set {
                tail: SetTail::Itself,
                ..
            },
            _,
        ) => "vmss.update",
        (
            Route::Set {
                tail: SetTail::Vms, ..
            },
            _,
        ) => "vmss.vms.list",
        (
            Route::Set {
                tail: SetTail::Vm(_),
                ..
            },
            &Method::GET,
        ) => "vmss.vms.get",
        (
            Route::Set {
                tail: SetTail::Vm(_),
                ..
            },
            _,
        ) => "vmss.vms.delete",
        (
            Route::Set {
                tail: SetTail::VmNics(_),
                ..
            },
            _,
        ) => "vmss.vm.nics.list",
        (
            Route::Set {
                tail: SetTail::VmPip { .. },
                ..
            },
            _,
        ) => "vmss.publicIPs.get",
        (
            Route::Set {
                tail: SetTail::DeleteInstances,
                ..
            },
            _,
        ) => "vmss.deleteInstances",
        (
            Route::Set {
                tail: SetTail::Nics,
                ..
            },
            _,
        ) => "vmss.nics.list",
        (
            Route::Set {
                tail: SetTail::Pips,
                ..
            },
            _,
        ) => "vmss.publicIPs.list",
        (
            Route::Rg {
                kind: RgKind::Vms,
                name: None,
            },
            _,
        ) => "vms.list",
        (
            Route::Rg {
                kind: RgKind::Vms,
                name: Some(_),
            },
            &Method::GET,
        ) => "vms.get",
        (
            Route::Rg {
                kind: RgKind::Vms,
                name: Some(_),
            },
            _,
        ) => "vms.delete",
        (
            Route::Rg {
                kind: RgKind::Nics,
                name: None,
            },
            _,
        ) => "nics.list",
        (
            Route::Rg {
                kind: RgKind::Nics,
                name: Some(_),
            },
            _,
        ) => "nics.get",
        (
            Route::Rg {
                kind: RgKind::Pips,
                name: None,
            },
            _,
        ) => "publicIPs.list",
        (
            Route::Rg {
                kind: RgKind::Pips,
                name: Some(_),
            },
            _,
        ) => "publicIPs.get",
    }
}

fn set_matches(spec: &ScaleSetSpec, sub: &str, rg: &str, name: &str) -> bool {
    spec.subscription.eq_ignore_ascii_case(sub)
        && spec.resource_group.eq_ignore_ascii_case(rg)
        && spec.name.eq_ignore_ascii_case(name)
}

#[allow(clippy::too_many_arguments)]
fn arm(
    s: &Shared,
    method: &Method,
    path: &str,
    segs: &[String],
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Some((sub, rg, r)) = route(segs) else {
        *s.lock().requests.entry("unknown".into()).or_default() += 1;
        return arm_error(
            404,
            "InvalidResourceType",
            &format!("The resource type could not be found for path '{path}'."),
        );
    };
    let op = operation(method, &r);
    let mut inner = s.lock();
    *inner.requests.entry(op.into()).or_default() += 1;
    // Bounded, for a mock run by hand for days.
    if inner.request_times.len() >= 100_000 {
        inner.request_times.drain(..50_000);
    }
    inner.request_times.push((std::time::Instant::now(), op));

    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty());
    let Some(bearer) = bearer else {
        return arm_error(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        );
    };
    if inner.strict_tokens
        && !inner
            .grants
            .iter()
            .any(|g| g.access_token == bearer && g.scope.trim_end_matches("/.default") == s.base)
    {
        return arm_error(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid or was not issued for this audience.",
        );
    }
    let for_op = inner.op_faults.iter().position(|(o, _)| o == op);
    let fault = match for_op {
        Some(i) => Some(inner.op_faults.remove(i).1),
        None => inner.faults.pop_front(),
    };
    if let Some(fault) = fault {
        return match fault {
            ArmFault::Throttle { retry_after_secs } => {
                let mut response = arm_error(
                    429,
                    "TooManyRequests",
                    "The request is being throttled as the limit has been reached for operation type - Read_30Min.",
                );
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert("retry-after", v);
                }
                response
            }
            ArmFault::Status {
                status,
                code,
                message,
            } => arm_error(status, &code, &message),
        };
    }
    let Some(api_version) = param(query, "api-version") else {
        return arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    };
    // The scale set NIC and public IP listings are served by the Network
    // provider at its old api-version only.
    if matches!(
        r,
        Route::Set {
            tail: SetTail::Nics | SetTail::Pips | SetTail::VmNics(_) | SetTail::VmPip { .. },
            ..
        }
    ) && api_version != "2018-10-01"
    {
        return arm_error(
            400,
            "NoRegisteredProviderFound",
            &format!(
                "No registered resource provider found for location 'westeurope' and API version '{api_version}' for type 'virtualMachineScaleSets/networkInterfaces'. The supported api-versions are '2017-03-30, 2018-10-01'."
            ),
        );
    }

    let mut extra = HeaderMap::new();
    if *method == Method::GET {
        inner.ratelimit_remaining = inner.ratelimit_remaining.saturating_sub(1);
        if let Ok(v) = HeaderValue::from_str(&inner.ratelimit_remaining.to_string()) {
            extra.insert("x-ms-ratelimit-remaining-subscription-reads", v);
        }
        if op == "vmss.vms.list" || op == "vms.list" {
            extra.insert(
                "x-ms-ratelimit-remaining-resource",
                HeaderValue::from_static(
                    "Microsoft.Compute/HighCostGet3Min;107,Microsoft.Compute/HighCostGet30Min;527",
                ),
            );
        }
    }
    let page_size = inner.page_size;
    // Items render lazily: only the requested page is built.
    let pager = |items: Vec<Lazy<'_>>| -> Value {
        let skip: usize = param(query, "$skiptoken")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let end = (skip + page_size).min(items.len());
        let next = (end < items.len()).then(|| {
            let rest: Vec<String> = query
                .iter()
                .filter(|(k, _)| k != "$skiptoken")
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            format!("{}{path}?{}&%24skiptoken={end}", s.base, rest.join("&"))
        });
        let items = items
            .into_iter()
            .skip(skip)
            .take(end.saturating_sub(skip))
            .map(|render| render())
            .collect();
        render::page(items, next)
    };

    match r {
        Route::Set { set, tail } => {
            let Some(state) = inner
                .cloud
                .sets
                .values()
                .find(|st| set_matches(&st.spec, &sub, &rg, &set))
            else {
                return not_found(
                    &inner,
                    &sub,
                    &rg,
                    "Microsoft.Compute/virtualMachineScaleSets",
                    &set,
                );
            };
            let key = state.spec.name.clone();
            let spec = state.spec.clone();
            let spec = &spec;
            match (tail, method) {
                (SetTail::Itself, &Method::GET) => ok(render::scale_set(spec), extra),
                (SetTail::Itself, &Method::PATCH | &Method::PUT) => {
                    let capacity = serde_json::from_slice::<Value>(body)
                        .ok()
                        .and_then(|v| v["sku"]["capacity"].as_u64());
                    let Some(capacity) = capacity else {
                        return arm_error(400, "InvalidParameter", "sku.capacity is required.");
                    };
                    inner.cloud.scale(&key, capacity as u32);
                    ok(render::scale_set(&inner.cloud.sets[&key].spec), extra)
                }
                (SetTail::Vms, &Method::GET) => {
                    if spec.mode == Mode::Flexible {
                        // Flexible members are plain VMs of the resource group.
                        return ok(pager(Vec::new()), extra);
                    }
                    let expand = param(query, "$expand")
                        .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
                    let items = state_vms(&inner, &key)
                        .into_iter()
                        .map(|vm| lazy(move || render::uniform_vm(spec, &vm, expand)))
                        .collect();
                    ok(pager(items), extra)
                }
                (SetTail::Vm(id), &Method::GET) if spec.mode == Mode::Uniform => {
                    let expand = param(query, "$expand")
                        .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
                    match uniform_member(&inner, &key, &id) {
                        Some(vm) => ok(render::uniform_vm(spec, &vm, expand), extra),
                        None => vm_not_found(&rg, &spec.name, &id),
                    }
                }
                (SetTail::VmNics(id), &Method::GET) if spec.mode == Mode::Uniform => {
                    match uniform_member(&inner, &key, &id) {
                        Some(vm) => ok(render::page(vec![render::nic(spec, &vm)], None), extra),
                        None => vm_not_found(&rg, &spec.name, &id),
                    }
                }
                (SetTail::VmPip { instance, nic, pip }, &Method::GET)
                    if spec.mode == Mode::Uniform =>
                {
                    let found = uniform_member(&inner, &key, &instance)
                        .filter(|_| {
                            nic.eq_ignore_ascii_case(&format!("{}-nic", spec.name))
                                && pip.eq_ignore_ascii_case(&format!("{}-pip", spec.name))
                        })
                        .and_then(|vm| render::public_ip(spec, &vm));
                    match found {
                        Some(value) => ok(value, extra),
                        None => arm_error(
                            404,
                            "ResourceNotFound",
                            &format!(
                                "The Resource 'Microsoft.Compute/virtualMachineScaleSets/{}/virtualMachines/{instance}/networkInterfaces/{nic}/ipConfigurations/publicIPAddresses/{pip}' under resource group '{rg}' was not found.",
                                spec.name
                            ),
                        ),
                    }
                }
                (SetTail::Vm(id), &Method::DELETE) => {
                    inner
                        .cloud
                        .mark_deleting(&key, |v| v.instance_id.as_deref() == Some(id.as_str()));
                    StatusCode::ACCEPTED.into_response()
                }
                (SetTail::DeleteInstances, &Method::POST) => {
                    let ids: Vec<String> = serde_json::from_slice::<Value>(body)
                        .ok()
                        .and_then(|v| serde_json::from_value(v["instanceIds"].clone()).ok())
                        .unwrap_or_default();
                    inner.cloud.mark_deleting(&key, |v| {
                        v.instance_id.as_ref().is_some_and(|i| ids.contains(i))
                    });
                    StatusCode::ACCEPTED.into_response()
                }
                (SetTail::Nics, &Method::GET) if spec.mode == Mode::Uniform => {
                    let items = state_vms(&inner, &key)
                        .into_iter()
                        .map(|vm| lazy(move || render::nic(spec, &vm)))
                        .collect();
                    ok(pager(items), extra)
                }
                (SetTail::Pips, &Method::GET) if spec.mode == Mode::Uniform => {
                    let items = state_vms(&inner, &key)
                        .into_iter()
                        .filter(|vm| vm.public_ipv4.is_some())
                        .map(|vm| lazy(move || render::public_ip(spec, &vm).unwrap_or_default()))
                        .collect();
                    ok(pager(items), extra)
                }
                (SetTail::Nics | SetTail::Pips, &Method::GET) => ok(pager(Vec::new()), extra),
                _ => arm_error(
                    405,
                    "MethodNotAllowed",
                    "The method is not allowed on this resource.",
                ),
            }
        }
        Route::Rg { kind, name } => {
            let rg_known = inner.cloud.sets.values().any(|st| {
                st.spec.subscription.eq_ignore_ascii_case(&sub)
                    && st.spec.resource_group.eq_ignore_ascii_case(&rg)
            }) || inner.cloud.standalone.iter().any(|v| {
                v.subscription.eq_ignore_ascii_case(&sub)
                    && v.resource_group.eq_ignore_ascii_case(&rg)
            });
            if !rg_known {
                return arm_error(
                    404,
                    "ResourceGroupNotFound",
                    &format!("Resource group '{rg}' could not be found."),
                );
            }
            let flexible: Vec<ScaleSetSpec> = inner
                .cloud
                .sets
                .values()
                .filter(|st| {
                    st.spec.mode == Mode::Flexible
                        && st.spec.subscription.eq_ignore_ascii_case(&sub)
                        && st.spec.resource_group.eq_ignore_ascii_case(&rg)
                })
                .map(|st| st.spec.clone())
                .collect();
            if let (RgKind::Vms, Some(vm_name), &Method::DELETE) = (&kind, &name, method) {
                for spec in &flexible {
                    inner
                        .cloud
                        .mark_deleting(&spec.name, |v| v.name.eq_ignore_ascii_case(vm_name));
                }
                return StatusCode::ACCEPTED.into_response();
            }
            if let (Some(name), &Method::GET) = (&name, method) {
                let query_expand =
                    param(query, "$expand").is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
                return match rg_resource(&inner, &sub, &rg, &kind, name, query_expand) {
                    Some(value) => ok(value, extra),
                    None => not_found(&inner, &sub, &rg, kind.resource_type(), name),
                };
            }
            if name.is_some() || *method != Method::GET {
                return arm_error(
                    405,
                    "MethodNotAllowed",
                    "The method is not allowed on this resource.",
                );
            }
            let standalone: Vec<_> = inner
                .cloud
                .standalone
                .iter()
                .filter(|v| {
                    v.subscription.eq_ignore_ascii_case(&sub)
                        && v.resource_group.eq_ignore_ascii_case(&rg)
                })
                .cloned()
                .collect();
            let mut items = Vec::new();
            match kind {
                RgKind::Vms => {
                    let filter = match param(query, "$filter") {
                        None => None,
                        Some(f) => match vmss_filter(f) {
                            Some(id) => Some(id),
                            None => {
                                return arm_error(
                                    400,
                                    "InvalidParameter",
                                    "The value of parameter $filter is invalid. Allowed: 'virtualMachineScaleSet/id' eq '<scale set id>'.",
                                );
                            }
                        },
                    };
                    let expand = param(query, "$expand")
                        .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
                    if expand && filter.is_none() {
                        return arm_error(
                            400,
                            "InvalidParameter",
                            "$expand=instanceView is only supported together with a valid $filter.",
                        );
                    }
                    for spec in &flexible {
                        if filter
                            .as_ref()
                            .is_some_and(|f| !f.eq_ignore_ascii_case(&spec.id()))
                        {
                            continue;
                        }
                        for vm in state_vms(&inner, &spec.name) {
                            let sub = sub.clone();
                            items.push(lazy(move || {
                                render::flexible_vm(
                                    &sub,
                                    &spec.resource_group,
                                    &spec.location,
                                    Some(spec),
                                    &vm,
                                    expand,
                                )
                            }));
                        }
                    }
                    if filter.is_none() {
                        for v in &standalone {
                            items.push(lazy(move || {
                                render::flexible_vm(
                                    &v.subscription,
                                    &v.resource_group,
                                    "westeurope",
                                    None,
                                    &v.vm,
                                    expand,
                                )
                            }));
                        }
                    }
                }
                RgKind::Nics => {
                    for spec in &flexible {
                        for vm in state_vms(&inner, &spec.name) {
                            items.push(lazy(move || render::nic(spec, &vm)));
                        }
                    }
                    for v in &standalone {
                        items.push(lazy(move || {
                            let pseudo = ScaleSetSpec::flexible(
                                &v.subscription,
                                &v.resource_group,
                                &v.vm.name,
                            );
                            render::nic(&pseudo, &v.vm)
                        }));
                    }
                }
                RgKind::Pips => {
                    for spec in &flexible {
                        for vm in state_vms(&inner, &spec.name) {
                            if vm.public_ipv4.is_some() {
                                items.push(lazy(move || {
                                    render::public_ip(spec, &vm).unwrap_or_default()
                                }));
                            }
                        }
                    }
                }
            }
            ok(pager(items), extra)
        }
    }
}

impl RgKind {
    fn resource_type(&self) -> &'static str {
        match self {
            RgKind::Vms => "Microsoft.Compute/virtualMachines",
            RgKind::Nics => "Microsoft.Network/networkInterfaces",
            RgKind::Pips => "Microsoft.Network/publicIPAddresses",
        }
    }
}

/// The Uniform set's VM of that instance id (listed ones, `Deleting` too).
fn uniform_member(inner: &super::Inner, set: &str, instance: &str) -> Option<super::MockVm> {
    state_vms(inner, set)
        .into_iter()
        .find(|v| v.instance_id.as_deref() == Some(instance))
}

/// ARM's answer for a scale set VM it does not have.
fn vm_not_found(rg: &str, set: &str, instance: &str) -> Response {
    arm_error(
        404,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.Compute/virtualMachineScaleSets/{set}/virtualMachines/{instance}' under resource group '{rg}' was not found."
        ),
    )
}

/// One VM, NIC or public IP of the resource group by name, as the
/// resource group's lists render it: a Flexible member's or a standalone
/// VM's (`{vm}-nic`, `{vm}-pip`).
fn rg_resource(
    inner: &super::Inner,
    sub: &str,
    rg: &str,
    kind: &RgKind,
    name: &str,
    expand: bool,
) -> Option<Value> {
    let here = |s: &str, r: &str| s.eq_ignore_ascii_case(sub) && r.eq_ignore_ascii_case(rg);
    let named = |vm: &super::MockVm| match kind {
        RgKind::Vms => vm.name.eq_ignore_ascii_case(name),
        RgKind::Nics => format!("{}-nic", vm.name).eq_ignore_ascii_case(name),
        RgKind::Pips => format!("{}-pip", vm.name).eq_ignore_ascii_case(name),
    };
    for st in inner.cloud.sets.values() {
        let spec = &st.spec;
        if spec.mode != Mode::Flexible || !here(&spec.subscription, &spec.resource_group) {
            continue;
        }
        if let Some(vm) = st.vms.iter().find(|v| named(v)) {
            return match kind {
                RgKind::Vms => Some(render::flexible_vm(
                    sub,
                    &spec.resource_group,
                    &spec.location,
                    Some(spec),
                    vm,
                    expand,
                )),
                RgKind::Nics => Some(render::nic(spec, vm)),
                RgKind::Pips => render::public_ip(spec, vm),
            };
        }
    }
    let v = inner
        .cloud
        .standalone
        .iter()
        .find(|v| here(&v.subscription, &v.resource_group) && named(&v.vm))?;
    let pseudo = ScaleSetSpec::flexible(&v.subscription, &v.resource_group, &v.vm.name);
    match kind {
        RgKind::Vms => Some(render::flexible_vm(
            &v.subscription,
            &v.resource_group,
            "westeurope",
            None,
            &v.vm,
            expand,
        )),
        RgKind::Nics => Some(render::nic(&pseudo, &v.vm)),
        RgKind::Pips => None,
    }
}

fn state_vms(inner: &super::Inner, set: &str) -> Vec<super::MockVm> {
    inner
        .cloud
        .sets
        .get(set)
        .map(|s| s.vms.clone())
        .unwrap_or_default()
}

fn not_found(inner: &super::Inner, sub: &str, rg: &str, kind: &str, name: &str) -> Response {
    let rg_known = inner.cloud.sets.values().any(|st| {
        st.spec.subscription.eq_ignore_ascii_case(sub)
            && st.spec.resource_group.eq_ignore_ascii_case(rg)
    });
    if rg_known {
        arm_error(
            404,
            "ResourceNotFound",
            &format!("The Resource '{kind}/{name}' under resource group '{rg}' was not found."),
        )
    } else {
        arm_error(
            404,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        )
    }
}

/// `'virtualMachineScaleSet/id' eq '/subscriptions/...'` → the id.
fn vmss_filter(filter: &str) -> Option<String> {
    let (left, right) = filter.split_once(" eq ")?;
    if !left
        .trim()
        .trim_matches('\'')
        .eq_ignore_ascii_case("virtualMachineScaleSet/id")
    {
        return None;
    }
    let id = right.trim().trim_matches('\'');
    (!id.is_empty()).then(|| id.to_string())
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
        })),
    )
        .into_response()
}

fn b64url(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The Azure AD v2 token endpoint: client credentials with a secret or a
/// federated assertion. Tokens are JWT-shaped (unsigned) so Azurite's
/// `--oauth basic` accepts them.
fn token(s: &Shared, tenant: &str, body: &Bytes) -> Response {
    let form = parse_query(&String::from_utf8_lossy(body));
    let mut inner = s.lock();
    *inner.requests.entry("token".into()).or_default() += 1;
    let field = |k: &str| param(&form, k).map(str::to_string);
    if field("grant_type").as_deref() != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let (Some(client_id), Some(scope)) = (field("client_id"), field("scope")) else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain client_id and scope.",
        );
    };
    let key = (tenant.to_string(), client_id.clone());
    let grant = if let Some(secret) = field("client_secret") {
        if inner.secrets.get(&key) != Some(&secret) {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided.",
            );
        }
        Grant::ClientSecret
    } else if let Some(assertion) = field("client_assertion") {
        if field("client_assertion_type").as_deref()
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                "Invalid client assertion type.",
            );
        }
        if inner.assertions.get(&key) != Some(&assertion) {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700213,
                "No matching federated identity record found for presented assertion.",
            );
        }
        Grant::Assertion
    } else {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain client_assertion or client_secret.",
        );
    };
    let now = chrono::Utc::now().timestamp();
    let aud = scope
        .split(' ')
        .next()
        .unwrap_or_default()
        .trim_end_matches("/.default")
        .to_string();
    let serial = inner.grants.len();
    let access_token = format!(
        "{}.{}.bW9jaw",
        b64url(&json!({"typ": "JWT", "alg": "RS256", "kid": "mock"})),
        b64url(&json!({
            "aud": aud,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "iat": now, "nbf": now - 60, "exp": now + 3600,
            "appid": client_id, "tid": tenant, "oid": format!("00000000-0000-4000-a000-{serial:012x}"),
            "jti": serial.to_string(),
        }))
    );
    inner.grants.push(TokenGrant {
        tenant: tenant.into(),
        client_id,
        grant,
        scope,
        access_token: access_token.clone(),
    });
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": access_token,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let q = parse_query(
            "api-version=2024-11-01&%24filter=%27virtualMachineScaleSet%2Fid%27+eq+%27%2Fs%2Fx%27",
        );
        assert_eq!(
            param(&q, "$filter"),
            Some("'virtualMachineScaleSet/id' eq '/s/x'")
        );
        assert_eq!(decode(&encode("a b/'$")), "a b/'$");
        assert_eq!(
            vmss_filter("'virtualMachineScaleSet/id' eq '/s/x'").as_deref(),
            Some("/s/x")
        );
        assert_eq!(vmss_filter("name eq 'x'"), None);
    }
}
