//! A stateful mock of the Compute Engine v1 API, enough for managed
//! instance groups: zonal and regional groups, `listManagedInstances` (POST,
//! filtered, paged), instances `get`, `list` (filtered, paged) and `aggregatedList`
//! (keyed `zones/ZONE`, `warning` for empty zones), Google-style error
//! bodies, control calls (resize, delete, set actions and statuses, faults)
//! and request counts. No Compute Engine emulator exists for groups.
//!
//! Served under `/compute/v1/` on 127.0.0.1, plain http, no auth. Unknown
//! query parameters (`$alt`, `$apiVersion`, ...) are ignored, as the real
//! API does.

pub(crate) mod control;
mod filter;
mod pubsub;
mod render;
#[cfg(test)]
mod schema_check;
mod state;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use filter::Filter;
pub use pubsub::PubSubEmulator;
pub use state::{MigKey, Scope, Template, Vm};

use state::World;

/// An error the mock answers instead of the next calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 `RESOURCE_EXHAUSTED`, reason `rateLimitExceeded`.
    TooManyRequests,
    /// 403 `rateLimitExceeded`, as older answers put a rate limit.
    RateLimitExceeded,
    /// 500, 502, 503 ...
    ServerError(u16),
}

/// One API call as the mock saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// The API method, e.g. `instances.aggregatedList`.
    pub operation: String,
}

#[derive(Debug)]
struct Shared {
    world: Mutex<World>,
    faults: Mutex<VecDeque<Fault>>,
    log: Mutex<Vec<Recorded>>,
    max_page: Mutex<usize>,
    base: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running mock; dropping it stops it. Its driving methods are those
/// of [`GceControl`], which it derefs to.
#[derive(Debug)]
pub struct GceMock {
    control: GceControl,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for GceMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::ops::Deref for GceMock {
    type Target = GceControl;

    fn deref(&self) -> &GceControl {
        &self.control
    }
}

/// Drives the mock's world: groups, VMs, faults, counts. The HTTP control
/// routes under `/_mock/` (module `control`) call these same methods.
#[derive(Clone, Debug)]
pub struct GceControl {
    shared: Arc<Shared>,
}

impl GceMock {
    /// Serves on an ephemeral port of 127.0.0.1, on the caller's runtime.
    pub async fn start() -> io::Result<GceMock> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves on `listen` (port 0: a free one), on the caller's runtime: what
    /// `meshmirror-testkit gce --listen` runs. The links the mock writes name
    /// 127.0.0.1 when `listen` is an unspecified address (0.0.0.0, ::).
    pub async fn start_at(listen: SocketAddr) -> io::Result<GceMock> {
        let tcp = tokio::net::TcpListener::bind(listen).await?;
        let addr = advertised(tcp.local_addr()?);
        let shared = Arc::new(Shared {
            world: Mutex::default(),
            faults: Mutex::default(),
            log: Mutex::default(),
            max_page: Mutex::new(500),
            base: format!("http://{addr}/compute/v1/"),
        });
        let router = Router::new()
            .route("/_mock", axum::routing::any(control::handle))
            .route("/_mock/", axum::routing::any(control::handle))
            .route("/_mock/{*rest}", axum::routing::any(control::handle))
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(tcp, router).await;
        });
        tracing::info!(url = %format!("http://{addr}"), "GCE mock listening");
        Ok(GceMock {
            control: GceControl { shared },
            addr,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`: the official client's endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A cloneable handle on the mock's world (it drives the mock while the
    /// mock runs).
    pub fn control(&self) -> GceControl {
        self.control.clone()
    }

    /// What `meshmirror-testkit gce` prints: where the mock listens, its
    /// control routes, and the flags that point `meshmirror run` at it.
    pub fn by_hand_banner(&self) -> String {
        let endpoint = self.endpoint();
        format!(
            "GCE mock (Compute Engine v1) listening on {endpoint}\n\
             control routes: {endpoint}/_mock/ (GET it for the list)\n\
             meshmirror flags: --gcp-endpoint {endpoint}\n"
        )
    }
}

/// The address clients use: 127.0.0.1 (or ::1) for an unspecified one.
pub(crate) fn advertised(bound: SocketAddr) -> SocketAddr {
    match bound {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

impl GceControl {
    /// `http://127.0.0.1:PORT/compute/v1/`: gcloud's endpoint override and
    /// the base of every link the mock writes.
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn add_zonal_group(&self, project: &str, zone: &str, name: &str, t: Template) -> MigKey {
        let key = MigKey::zonal(project, zone, name);
        lock(&self.shared.world).add_mig(key.clone(), vec![zone.into()], t);
        key
    }

    pub fn add_regional_group(
        &self,
        project: &str,
        region: &str,
        zones: &[&str],
        name: &str,
        t: Template,
    ) -> MigKey {
        let key = MigKey::regional(project, region, name);
        let zones = zones.iter().map(|z| z.to_string()).collect();
        lock(&self.shared.world).add_mig(key.clone(), zones, t);
        key
    }

    /// A VM no group manages.
    pub fn add_vm(&self, project: &str, zone: &str, name: &str, t: &Template) {
        lock(&self.shared.world).add_vm(project, zone, name, None, t);
    }

    /// A zone with no VMs (aggregated lists show it with a warning).
    pub fn add_zone(&self, project: &str, zone: &str) {
        lock(&self.shared.world)
            .extra_zones
            .push((project.into(), zone.into()));
    }

    /// Resizes the group: new VMs run at once; the surplus gets `DELETING`
    /// and stays listed until [`GceControl::settle`]. Returns the names made or
    /// marked.
    pub fn resize(&self, key: &MigKey, size: usize) -> Vec<String> {
        self.try_resize(key, size)
            .expect("resize of a group the mock has")
    }

    /// [`GceControl::resize`], or `None` for a group the mock does not have.
    pub fn try_resize(&self, key: &MigKey, size: usize) -> Option<Vec<String>> {
        lock(&self.shared.world).resize(key, size)
    }

    /// Whether the mock has the group.
    pub fn has_group(&self, key: &MigKey) -> bool {
        lock(&self.shared.world).migs.contains_key(key)
    }

    /// The group's zones (one for a zonal group), or `None` for a group the
    /// mock does not have.
    pub fn group_zones(&self, key: &MigKey) -> Option<Vec<String>> {
        lock(&self.shared.world)
            .migs
            .get(key)
            .map(|mig| mig.zones.clone())
    }

    /// `deleteInstances`: the named members get `DELETING`.
    pub fn delete_instances(&self, names: &[&str]) {
        for name in names {
            self.set_action(name, "DELETING");
        }
    }

    pub fn set_action(&self, name: &str, action: &str) {
        self.with_vm(name, |vm| vm.action = action.into());
    }

    pub fn set_status(&self, name: &str, status: &str) {
        self.with_vm(name, |vm| vm.status = status.into());
    }

    pub fn set_health(&self, name: &str, health: Option<&str>) {
        self.with_vm(name, |vm| vm.health = health.map(Into::into));
    }

    /// A member the group is still creating: listed without id or status,
    /// and no instance exists yet.
    pub fn set_unprovisioned(&self, name: &str) {
        self.with_vm(name, |vm| {
            vm.provisioned = false;
            vm.action = "CREATING".into();
        });
    }

    /// Whether instance listings (`list`, `aggregatedList`) show the VM.
    /// `false` plays the moment a listing misses a VM its group already
    /// reports, with its id (the two reads race); `get` still finds it.
    pub fn set_listed(&self, name: &str, listed: bool) {
        self.with_vm(name, |vm| vm.listed = listed);
    }

    pub fn set_labels(&self, name: &str, labels: &[(&str, &str)]) {
        self.with_vm(name, |vm| {
            vm.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
    }

    fn with_vm(&self, name: &str, f: impl FnOnce(&mut Vm)) {
        let mut world = lock(&self.shared.world);
        f(world.vm_mut(name).expect("a VM the mock has"));
    }

    /// Finishes every pending action: DELETING VMs vanish, the rest run.
    pub fn settle(&self) {
        lock(&self.shared.world).settle();
    }

    /// The group's members as the mock holds them, DELETING ones included.
    pub fn members(&self, key: &MigKey) -> Vec<Vm> {
        lock(&self.shared.world)
            .members(key)
            .into_iter()
            .cloned()
            .collect()
    }

    pub fn vm(&self, name: &str) -> Option<Vm> {
        lock(&self.shared.world)
            .vms
            .values()
            .find(|vm| vm.name == name)
            .cloned()
    }

    /// The next `n` API calls answer `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        lock(&self.shared.faults).extend(std::iter::repeat_n(fault, n));
    }

    /// Drops the faults not yet answered.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// The largest page the mock serves, whatever `maxResults` asks.
    pub fn set_max_page_size(&self, n: usize) {
        *lock(&self.shared.max_page) = n.max(1);
    }

    /// Calls by API method since start or the last reset.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in lock(&self.shared.log).iter() {
            *out.entry(r.operation.clone()).or_insert(0) += 1;
        }
        out
    }

    pub fn total_calls(&self) -> u64 {
        lock(&self.shared.log).len() as u64
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.log).clone()
    }

    pub fn reset_counts(&self) {
        lock(&self.shared.log).clear();
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=UTF-8",
        )],
        body.to_string(),
    )
        .into_response()
}

fn fail(code: u16, status: &str, reason: &str, message: &str) -> Response {
    answer(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        render::error(code, status, reason, message),
    )
}

fn not_found(what: &str) -> Response {
    fail(
        404,
        "NOT_FOUND",
        "notFound",
        &format!("The resource '{what}' was not found"),
    )
}

fn invalid(field: &str, value: &str, why: &str) -> Response {
    fail(
        400,
        "INVALID_ARGUMENT",
        "invalid",
        &format!("Invalid value for field '{field}': '{value}'. {why}"),
    )
}

fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::TooManyRequests => {
            let mut r = fail(
                429,
                "RESOURCE_EXHAUSTED",
                "rateLimitExceeded",
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of service 'compute.googleapis.com'.",
            );
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            r
        }
        Fault::RateLimitExceeded => fail(
            403,
            "PERMISSION_DENIED",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        ),
        Fault::ServerError(code) => fail(
            code,
            if code == 503 {
                "UNAVAILABLE"
            } else {
                "INTERNAL"
            },
            "backendError",
            "Internal error. Please try again or contact Google Support.",
        ),
    }
}

/// A paging parameter the API would refuse: (field, value, why).
type BadPaging = (&'static str, String, &'static str);

/// `maxResults` and `pageToken` over `items`: the page and the next token.
fn page<T>(
    items: Vec<T>,
    query: &HashMap<String, String>,
    max_page: usize,
) -> Result<(Vec<T>, Option<String>), BadPaging> {
    let asked = match query.get("maxResults").filter(|v| !v.is_empty()) {
        None => 500,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= 500 => n,
            _ => {
                return Err(("maxResults", v.clone(), "Must be less than or equal to 500"));
            }
        },
    };
    let size = asked.min(max_page).max(1);
    let offset = match query.get("pageToken").map(String::as_str) {
        None | Some("") => 0,
        Some(t) => match t.strip_prefix("offset-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return Err(("pageToken", t.to_string(), "Invalid page token.")),
        },
    };
    let total = items.len();
    let out: Vec<T> = items.into_iter().skip(offset).take(size).collect();
    let next = (offset + size < total).then(|| format!("offset-{}", offset + size));
    Ok((out, next))
}

fn list_body(
    kind: &str,
    id: String,
    self_link: String,
    items: Vec<Value>,
    next: Option<String>,
) -> Value {
    let mut out = json!({"kind": kind, "id": id, "items": items, "selfLink": self_link});
    if let Some(next) = next {
        out["nextPageToken"] = json!(next);
    }
    out
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = uri.path().to_string();
    let Some(rest) = path.strip_prefix("/compute/v1/projects/") else {
        return not_found(&path);
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let project = segs[0].to_string();
    let operation = match (&method, &segs[1..]) {
        (
            &Method::POST,
            [
                "zones",
                _,
                "instanceGroupManagers",
                _,
                "listManagedInstances",
            ],
        ) => "instanceGroupManagers.listManagedInstances",
        (
            &Method::POST,
            [
                "regions",
                _,
                "instanceGroupManagers",
                _,
                "listManagedInstances",
            ],
        ) => "regionInstanceGroupManagers.listManagedInstances",
        (&Method::GET, ["zones", _, "instanceGroupManagers", _]) => "instanceGroupManagers.get",
        (&Method::GET, ["regions", _, "instanceGroupManagers", _]) => {
            "regionInstanceGroupManagers.get"
        }
        (&Method::GET, ["zones", _, "instances"]) => "instances.list",
        (&Method::GET, ["zones", _, "instances", _]) => "instances.get",
        (&Method::GET, ["aggregated", "instances"]) => "instances.aggregatedList",
        (&Method::GET, ["zones", _]) => "zones.get",
        _ => return not_found(&path),
    };
    lock(&shared.log).push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone().into_iter().collect(),
        operation: operation.into(),
    });
    if let Some(fault) = lock(&shared.faults).pop_front() {
        return fault_response(fault);
    }
    let base = shared.base.as_str();
    let max_page = *lock(&shared.max_page);
    let world = lock(&shared.world);
    let managed = operation.ends_with(".listManagedInstances");
    let text = query.get("filter").map_or("", String::as_str);
    // A filter the mock cannot read is refused, as the API refuses one it
    // cannot: ignoring it would answer more than was asked.
    let parsed = if managed {
        Filter::parse_managed(text)
    } else {
        Filter::parse(text)
    };
    let filter = match parsed {
        Ok(f) => f,
        Err(why) => {
            return invalid(
                "filter",
                query.get("filter").map_or("", String::as_str),
                &format!("Invalid list filter expression: {why}."),
            );
        }
    };
    let passes = |vm: &Vm| {
        vm.provisioned
            && vm.listed
            && filter
                .as_ref()
                .is_none_or(|f| f.matches(vm, &render::zone_url(base, &vm.project, &vm.zone)))
    };
    match (operation, &segs[1..]) {
        (_, [scope_kind, scope, "instanceGroupManagers", name, ..]) => {
            let key = MigKey {
                project: project.clone(),
                scope: if *scope_kind == "zones" {
                    Scope::Zone(scope.to_string())
                } else {
                    Scope::Region(scope.to_string())
                },
                name: name.to_string(),
            };
            let Some(mig) = world.migs.get(&key) else {
                return not_found(&format!(
                    "projects/{project}/{scope_kind}/{scope}/instanceGroupManagers/{name}"
                ));
            };
            let members = world.members(&key);
            if operation.ends_with(".get") {
                return answer(
                    StatusCode::OK,
                    render::instance_group_manager(base, mig, &members),
                );
            }
            let items: Vec<Value> = members
                .iter()
                .filter(|vm| filter.as_ref().is_none_or(|f| f.matches_managed(vm)))
                .map(|vm| render::managed_instance(base, vm))
                .collect();
            match page(items, &query, max_page) {
                Err((field, value, why)) => invalid(field, &value, why),
                Ok((items, next)) => {
                    let mut body = json!({"managedInstances": items});
                    if let Some(next) = next {
                        body["nextPageToken"] = json!(next);
                    }
                    answer(StatusCode::OK, body)
                }
            }
        }
        ("zones.get", ["zones", zone]) => {
            if !world.zones(&project).iter().any(|z| z == zone) {
                return not_found(&format!("projects/{project}/zones/{zone}"));
            }
            answer(
                StatusCode::OK,
                json!({
                    "kind": "compute#zone",
                    "name": zone,
                    "status": "UP",
                    "region": format!("{base}projects/{project}/regions/{}", render::region_of(zone)),
                    "selfLink": render::zone_url(base, &project, zone),
                }),
            )
        }
        ("instances.get", ["zones", zone, "instances", name]) => {
            match world
                .vms
                .get(&(project.clone(), zone.to_string(), name.to_string()))
                .filter(|vm| vm.provisioned)
            {
                Some(vm) => answer(StatusCode::OK, render::instance(base, vm)),
                None => not_found(&format!("projects/{project}/zones/{zone}/instances/{name}")),
            }
        }
        ("instances.list", ["zones", zone, "instances"]) => {
            let items: Vec<Value> = world
                .vms
                .values()
                .filter(|vm| vm.project == project && vm.zone == *zone && passes(vm))
                .map(|vm| render::instance(base, vm))
                .collect();
            match page(items, &query, max_page) {
                Err((field, value, why)) => invalid(field, &value, why),
                Ok((items, next)) => answer(
                    StatusCode::OK,
                    list_body(
                        "compute#instanceList",
                        format!("projects/{project}/zones/{zone}/instances"),
                        format!("{}/instances", render::zone_url(base, &project, zone)),
                        items,
                        next,
                    ),
                ),
            }
        }
        ("instances.aggregatedList", _) => {
            let vms: Vec<&Vm> = world
                .vms
                .values()
                .filter(|vm| vm.project == project && passes(vm))
                .collect();
            match page(vms, &query, max_page) {
                Err((field, value, why)) => invalid(field, &value, why),
                Ok((vms, next)) => {
                    let mut items = serde_json::Map::new();
                    for zone in world.zones(&project) {
                        let scope = format!("zones/{zone}");
                        let here: Vec<Value> = vms
                            .iter()
                            .filter(|vm| vm.zone == zone)
                            .map(|vm| render::instance(base, vm))
                            .collect();
                        let scoped = if here.is_empty() {
                            json!({"warning": render::no_results(&scope)})
                        } else {
                            json!({"instances": here})
                        };
                        items.insert(scope, scoped);
                    }
                    let mut body = json!({
                        "kind": "compute#instanceAggregatedList",
                        "id": format!("projects/{project}/aggregated/instances"),
                        "items": items,
                        "selfLink": format!("{base}projects/{project}/aggregated/instances"),
                    });
                    if let Some(next) = next {
                        body["nextPageToken"] = json!(next);
                    }
                    answer(StatusCode::OK, body)
                }
            }
        }
        _ => not_found(&path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_advertise_loopback() {
        let parse = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(advertised(parse("0.0.0.0:8080")), parse("127.0.0.1:8080"));
        assert_eq!(advertised(parse("[::]:8080")), parse("[::1]:8080"));
        assert_eq!(advertised(parse("10.1.2.3:80")), parse("10.1.2.3:80"));
    }

    #[test]
    fn pages_carry_offsets_and_refuse_bad_tokens() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (items, next) = page((0..7).collect(), &q(&[("maxResults", "3")]), 500).unwrap();
        assert_eq!(items, vec![0, 1, 2]);
        assert_eq!(next.as_deref(), Some("offset-3"));
        let (items, next) = page(
            (0..7).collect(),
            &q(&[("maxResults", "3"), ("pageToken", "offset-6")]),
            500,
        )
        .unwrap();
        assert_eq!(items, vec![6]);
        assert_eq!(next, None);
        let (items, _) = page((0..7).collect(), &q(&[("pageToken", "")]), 2).unwrap();
        assert_eq!(items, vec![0, 1]);
        assert!(page((0..7).collect::<Vec<_>>(), &q(&[("pageToken", "zzz")]), 500).is_err());
        assert!(
            page(
                (0..7).collect::<Vec<_>>(),
                &q(&[("maxResults", "501")]),
                500
            )
            .is_err()
        );
    }
}
