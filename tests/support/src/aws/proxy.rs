//! A proxy in front of moto that fills in what moto lacks, so tests can
//! drive meshmirror's AWS provider through the real SDK:
//!
//! - `CompleteLifecycleAction` and `RecordLifecycleActionHeartbeat` (moto
//!   answers 500): answered here, each call recorded with its token and result;
//! - lifecycle holds (moto never shows `Pending:Wait`/`Terminating:Wait`):
//!   chosen instances are shown in those states in `DescribeAutoScalingGroups`
//!   and `DescribeAutoScalingInstances` until a `CompleteLifecycleAction`
//!   releases them; a released terminate hold (or an ABANDONed launch) is then
//!   terminated through moto, decrementing the desired capacity;
//! - heartbeat timeouts: a hold by a hook the proxy was told about
//!   ([`AwsProxy::lifecycle_hook`]) that is neither heartbeated nor completed
//!   within the hook's heartbeat timeout ends as on AWS, with the hook's
//!   default result (recorded in [`AwsProxy::expired`]); a later heartbeat or
//!   completion gets "No active Lifecycle Action". (AWS's global timeout,
//!   100 heartbeat timeouts or 48 h, is not modelled.)
//! - instance facts moto does not model for Auto Scaling instances (public
//!   IPv4, IPv6, spot): added to `DescribeInstances` answers;
//! - spot requests EC2 has marked for interruption (moto has no spot request
//!   behind an Auto Scaling instance, and its own are always `fulfilled`):
//!   added to `DescribeSpotInstanceRequests` answers
//!   ([`AwsProxy::set_spot_marked`]);
//! - throttling (`Throttling`, `RequestLimitExceeded`) for the next N calls
//!   of an action;
//! - a count of every call by action.
//!
//! Everything else is forwarded unchanged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use super::upstream;
use super::xml;

/// The state a hold shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldState {
    PendingWait,
    TerminatingWait,
}

impl HoldState {
    fn as_str(self) -> &'static str {
        match self {
            HoldState::PendingWait => "Pending:Wait",
            HoldState::TerminatingWait => "Terminating:Wait",
        }
    }
}

/// One `CompleteLifecycleAction` or `RecordLifecycleActionHeartbeat` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleCall {
    /// `CompleteLifecycleAction` | `RecordLifecycleActionHeartbeat`
    pub action: String,
    pub group: String,
    pub hook: String,
    pub instance_id: Option<String>,
    pub token: Option<String>,
    /// `CONTINUE` | `ABANDON` (completions only).
    pub result: Option<String>,
    /// Whether a hold matched (otherwise AWS's "No active Lifecycle Action").
    pub accepted: bool,
    /// When the proxy received it: the caller sent it no later.
    pub at: std::time::Instant,
}

#[derive(Clone, Debug)]
struct Hold {
    state: HoldState,
    hook: String,
    token: Option<String>,
    /// When the hold ends by itself unless heartbeated or completed first
    /// (None: the hook's timeout was not given to the proxy).
    deadline: Option<Instant>,
}

/// What the proxy knows of a hook: what moto was told at `PutLifecycleHook`.
#[derive(Clone, Debug)]
struct HookTimeout {
    heartbeat: Duration,
    default_result: String,
}

/// A hold that ran out its heartbeat timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredHold {
    pub instance_id: String,
    pub hook: String,
    pub state: HoldState,
    /// The hook's default result it ended with (`CONTINUE` | `ABANDON`).
    pub result: String,
    /// When the proxy let it go (at most [`EXPIRY_TICK`] after its deadline).
    pub at: Instant,
}

/// How often the proxy looks for holds past their heartbeat timeout (and
/// at every request it serves).
pub const EXPIRY_TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct ProxyState {
    counts: BTreeMap<String, u64>,
    throttles: HashMap<String, u32>,
    holds: HashMap<String, Hold>,
    /// With a hook: every instance not seen before is held in Pending:Wait.
    hold_launches: Option<String>,
    seen: HashSet<String>,
    calls: Vec<LifecycleCall>,
    public: HashMap<String, Ipv4Addr>,
    ipv6: HashMap<String, Ipv6Addr>,
    spot: HashSet<String>,
    /// Instance id -> the status code of its (made-up) spot request.
    spot_marked: BTreeMap<String, String>,
    requests: u64,
    hooks: HashMap<String, HookTimeout>,
    expired: Vec<ExpiredHold>,
    /// The region of the last signed request, for the proxy's own calls.
    region: Option<String>,
}

impl ProxyState {
    /// When a hold by `hook` starting (or heartbeated) `now` times out.
    fn deadline(&self, hook: &str, now: Instant) -> Option<Instant> {
        self.hooks.get(hook).map(|h| now + h.heartbeat)
    }

    /// Ends the holds past their deadline with their hook's default result;
    /// returns the instances to terminate (terminate holds, ABANDONed
    /// launches).
    fn expire(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .holds
            .iter()
            .filter(|(_, h)| h.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        let mut release = Vec::new();
        for id in due {
            let Some(hold) = self.holds.remove(&id) else {
                continue;
            };
            let result = self
                .hooks
                .get(&hold.hook)
                .map(|h| h.default_result.clone())
                .unwrap_or_else(|| "ABANDON".into());
            tracing::info!(instance = %id, hook = %hold.hook, %result,
                "lifecycle hold ran out its heartbeat timeout");
            if hold.state == HoldState::TerminatingWait || result == "ABANDON" {
                release.push(id.clone());
            }
            self.expired.push(ExpiredHold {
                instance_id: id,
                hook: hold.hook,
                state: hold.state,
                result,
                at: now,
            });
        }
        release
    }
}

struct Shared {
    upstream: String,
    state: Mutex<ProxyState>,
}

/// The running proxy; stops when dropped.
pub struct AwsProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    expiry: tokio::task::JoinHandle<()>,
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.expiry.abort();
    }
}

/// Ends the holds past their heartbeat timeout, and terminates through moto
/// the instances that ending lets go, as Auto Scaling would.
async fn expire(shared: &Shared) {
    let (release, region) = {
        let mut state = shared.state.lock().expect("proxy state");
        let release = state.expire(Instant::now());
        (release, state.region.clone())
    };
    if release.is_empty() {
        return;
    }
    // Signed as the caller's requests are (moto routes by the credential
    // scope and checks no signature).
    let region = region.unwrap_or_else(|| "us-east-1".into());
    let now = chrono::Utc::now();
    let headers = vec![
        (
            "Authorization".to_string(),
            format!(
                "AWS4-HMAC-SHA256 Credential=testing/{}/{region}/autoscaling/aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
                now.format("%Y%m%d")
            ),
        ),
        (
            "X-Amz-Date".to_string(),
            now.format("%Y%m%dT%H%M%SZ").to_string(),
        ),
    ];
    for id in release {
        if let Err(e) = terminate(shared, &id, &headers).await {
            tracing::warn!(instance = %id, error = %e, "terminating a timed-out hold through moto");
        }
    }
}

impl AwsProxy {
    /// A proxy on a free 127.0.0.1 port in front of `upstream` (`host:port`
    /// or `http://host:port`).
    pub async fn start(upstream: &str) -> io::Result<AwsProxy> {
        let shared = Arc::new(Shared {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            state: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let expiry = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(EXPIRY_TICK);
                loop {
                    tick.tick().await;
                    expire(&shared).await;
                }
            })
        };
        Ok(AwsProxy {
            addr,
            shared,
            task,
            expiry,
        })
    }

    /// `http://127.0.0.1:PORT`, for `--aws-endpoint-url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.shared.state.lock().expect("proxy state")
    }

    /// The next `times` calls of `action` fail with the service's throttling
    /// error (`Throttling` for Auto Scaling, `RequestLimitExceeded` for EC2).
    pub fn throttle(&self, action: &str, times: u32) {
        self.state().throttles.insert(action.to_string(), times);
    }

    pub fn clear_throttles(&self) {
        self.state().throttles.clear();
    }

    /// Tells the proxy a hook's heartbeat timeout and default result (as
    /// given to moto's `PutLifecycleHook`, which the proxy does not see):
    /// holds by that hook started from now on time out as on AWS.
    pub fn lifecycle_hook(&self, hook: &str, heartbeat_timeout: Duration, default_result: &str) {
        self.state().hooks.insert(
            hook.to_string(),
            HookTimeout {
                heartbeat: heartbeat_timeout,
                default_result: default_result.to_string(),
            },
        );
    }

    /// Shows `instance_id` in `state`, held by `hook`, until completed (or,
    /// for a hook given to [`Self::lifecycle_hook`], until it times out).
    pub fn hold(&self, instance_id: &str, state: HoldState, hook: &str, token: Option<&str>) {
        let mut proxy = self.state();
        let deadline = proxy.deadline(hook, Instant::now());
        proxy.holds.insert(
            instance_id.to_string(),
            Hold {
                state,
                hook: hook.to_string(),
                token: token.map(str::to_string),
                deadline,
            },
        );
    }

    /// Holds that ran out their heartbeat timeout, in order.
    pub fn expired(&self) -> Vec<ExpiredHold> {
        self.state().expired.clone()
    }

    /// From now on, every instance the proxy has not seen in an answer
    /// before is held in `Pending:Wait` by `hook` (`None` stops this).
    pub fn hold_launches(&self, hook: Option<&str>) {
        self.state().hold_launches = hook.map(str::to_string);
    }

    /// Instances currently held, with their state.
    pub fn held(&self) -> BTreeMap<String, HoldState> {
        self.state()
            .holds
            .iter()
            .map(|(k, h)| (k.clone(), h.state))
            .collect()
    }

    pub fn set_public_ipv4(&self, instance_id: &str, ip: Ipv4Addr) {
        self.state().public.insert(instance_id.to_string(), ip);
    }

    pub fn set_ipv6(&self, instance_id: &str, ip: Ipv6Addr) {
        self.state().ipv6.insert(instance_id.to_string(), ip);
    }

    /// Shows the instance as a spot instance (`instanceLifecycle: spot`).
    pub fn set_spot(&self, instance_id: &str) {
        self.state().spot.insert(instance_id.to_string());
    }

    /// Shows a spot request with status `code` (`marked-for-termination`,
    /// `marked-for-stop`, `marked-for-hibernation`, ...) behind the instance
    /// in `DescribeSpotInstanceRequests` answers, as EC2 does once it has
    /// decided to interrupt a spot instance. Does not make the instance spot
    /// in `DescribeInstances` (see [`Self::set_spot`]).
    pub fn set_spot_marked(&self, instance_id: &str, code: &str) {
        self.state()
            .spot_marked
            .insert(instance_id.to_string(), code.to_string());
    }

    /// Every lifecycle call so far, in order.
    pub fn lifecycle_calls(&self) -> Vec<LifecycleCall> {
        self.state().calls.clone()
    }

    /// Calls by action (throttled ones included).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state().counts.clone()
    }

    pub fn count(&self, action: &str) -> u64 {
        self.state().counts.get(action).copied().unwrap_or(0)
    }

    pub fn reset_counts(&self) {
        self.state().counts.clear();
    }
}

/// What a request asks for.
struct Call {
    service: String,
    action: String,
    params: HashMap<String, String>,
}

fn classify(headers: &[(String, String)], body: &[u8]) -> Call {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    // Credential=AKID/DATE/REGION/SERVICE/aws4_request
    let service = header("authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("unknown")
        .to_string();
    if let Some(target) = header("x-amz-target") {
        return Call {
            service,
            action: target.rsplit('.').next().unwrap_or(target).to_string(),
            params: HashMap::new(),
        };
    }
    let params = form_decode(&String::from_utf8_lossy(body));
    Call {
        service,
        action: params.get("Action").cloned().unwrap_or_default(),
        params,
    }
}

/// The region of a SigV4 credential scope (`Credential=AKID/DATE/REGION/...`).
fn credential_region(headers: &[(String, String)]) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, a)| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .filter(|r| !r.is_empty())
        .map(str::to_string)
}

fn form_decode(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let call = classify(&headers, &body);
    // Holds past their deadline end before anything else is answered.
    expire(&shared).await;
    let throttled = {
        let mut state = shared.state.lock().expect("proxy state");
        if let Some(region) = credential_region(&headers) {
            state.region = Some(region);
        }
        state.requests += 1;
        *state.counts.entry(call.action.clone()).or_default() += 1;
        match state.throttles.get_mut(&call.action) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    if throttled {
        return throttle_response(&call);
    }
    match call.action.as_str() {
        "CompleteLifecycleAction" | "RecordLifecycleActionHeartbeat" => {
            lifecycle(&shared, &call, &headers).await
        }
        _ => {
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let upstream = match upstream::send(
                &shared.upstream,
                parts.method.as_str(),
                path,
                &headers,
                &body,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("moto: {e}")),
            };
            let rewritten = rewrite(&shared, &call, &upstream);
            respond(upstream, rewritten)
        }
    }
}

fn rewrite(shared: &Shared, call: &Call, r: &upstream::Response) -> Option<String> {
    if r.status != 200 {
        return None;
    }
    let action = call.action.as_str();
    if action == "DescribeSpotInstanceRequests" {
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let state = shared.state.lock().expect("proxy state");
        return add_spot_requests(&text, &call.params, &state.spot_marked);
    }
    let (list, tag, id_tag) = match action {
        "DescribeAutoScalingGroups" => ("Instances", "member", "InstanceId"),
        "DescribeAutoScalingInstances" => ("AutoScalingInstances", "member", "InstanceId"),
        "DescribeInstances" => ("instancesSet", "item", "instanceId"),
        _ => return None,
    };
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let mut state = shared.state.lock().expect("proxy state");
    let state = &mut *state;
    let out = xml::edit_elements(&text, list, tag, |element| {
        let id = xml::text(element, id_tag)?.to_string();
        if state.seen.insert(id.clone())
            && let Some(hook) = state.hold_launches.clone()
        {
            let deadline = state.deadline(&hook, Instant::now());
            state.holds.insert(
                id.clone(),
                Hold {
                    state: HoldState::PendingWait,
                    hook,
                    token: None,
                    deadline,
                },
            );
        }
        if action == "DescribeInstances" {
            let mut extra = String::new();
            if let Some(ip) = state.public.get(&id) {
                extra.push_str(&format!("<ipAddress>{ip}</ipAddress>"));
            }
            if state.spot.contains(&id) {
                extra.push_str("<instanceLifecycle>spot</instanceLifecycle>");
            }
            let mut element = element.to_string();
            if let Some(ip) = state.ipv6.get(&id) {
                extra.push_str(&format!("<ipv6Address>{ip}</ipv6Address>"));
                element = element.replacen(
                    "<ipv6AddressesSet/>",
                    &format!(
                        "<ipv6AddressesSet><item><ipv6Address>{ip}</ipv6Address><isPrimaryIpv6>true</isPrimaryIpv6></item></ipv6AddressesSet>"
                    ),
                    1,
                );
            }
            if extra.is_empty() {
                return None;
            }
            return Some(xml::insert_after(&element, id_tag, &extra));
        }
        let hold = state.holds.get(&id)?;
        Some(xml::replace_text(
            element,
            "LifecycleState",
            hold.state.as_str(),
        ))
    });
    (out != text).then_some(out)
}

/// The values of the query filter `name` (`Filter.N.Name=name`,
/// `Filter.N.Value.M=...`); None when no filter has that name.
fn filter_values(params: &HashMap<String, String>, name: &str) -> Option<HashSet<String>> {
    let mut found = None;
    for (key, value) in params {
        let Some(n) = key
            .strip_prefix("Filter.")
            .and_then(|k| k.strip_suffix(".Name"))
        else {
            continue;
        };
        if value != name {
            continue;
        }
        let prefix = format!("Filter.{n}.Value.");
        let values = found.get_or_insert_with(HashSet::new);
        values.extend(
            params
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.clone()),
        );
    }
    found
}

/// Adds a spot request for each marked instance the request asks about (by
/// its `instance-id` filter; all of them without one) to moto's
/// `DescribeSpotInstanceRequests` answer. Shaped as EC2's: an `active`
/// one-time request whose status code says the instance will be
/// interrupted. Other filters and request ids are not modelled.
fn add_spot_requests(
    xml: &str,
    params: &HashMap<String, String>,
    marked: &BTreeMap<String, String>,
) -> Option<String> {
    let wanted = filter_values(params, "instance-id");
    let updated = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S.000Z");
    let items: String = marked
        .iter()
        .filter(|(id, _)| wanted.as_ref().is_none_or(|w| w.contains(*id)))
        .map(|(id, code)| {
            let suffix = id.trim_start_matches("i-");
            let (id, code) = (xml::escape(id), xml::escape(code));
            format!(
                "<item><spotInstanceRequestId>sir-{suffix}</spotInstanceRequestId><spotPrice>0.010000</spotPrice><type>one-time</type><state>active</state><status><code>{code}</code><updateTime>{updated}</updateTime><message>Spot Instance marked for interruption (test proxy).</message></status><instanceId>{id}</instanceId><productDescription>Linux/UNIX</productDescription><instanceInterruptionBehavior>terminate</instanceInterruptionBehavior></item>"
            )
        })
        .collect();
    if items.is_empty() {
        return None;
    }
    // moto writes an empty list as `<spotInstanceRequestSet/>`, or as an
    // open and close tag; or leaves it out.
    const LIST: &str = "spotInstanceRequestSet";
    let empty = format!("<{LIST}/>");
    let close = format!("</{LIST}>");
    if xml.contains(&empty) {
        return Some(xml.replacen(&empty, &format!("<{LIST}>{items}</{LIST}>"), 1));
    }
    if let Some(at) = xml.find(&close) {
        return Some(format!("{}{items}{}", &xml[..at], &xml[at..]));
    }
    let end = "</DescribeSpotInstanceRequestsResponse>";
    let at = xml.find(end)?;
    Some(format!(
        "{}<{LIST}>{items}</{LIST}>{}",
        &xml[..at],
        &xml[at..]
    ))
}

fn respond(upstream: upstream::Response, rewritten: Option<String>) -> Response {
    let changed = rewritten.is_some();
    let body = match rewritten {
        Some(text) => text.into_bytes(),
        None => upstream.body,
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(upstream.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in &upstream.headers {
        let lower = k.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "connection" | "content-length" | "transfer-encoding" | "keep-alive"
        ) || (changed && lower == "x-amz-crc32")
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

async fn lifecycle(shared: &Shared, call: &Call, headers: &[(String, String)]) -> Response {
    let p = |k: &str| call.params.get(k).filter(|v| !v.is_empty()).cloned();
    let group = p("AutoScalingGroupName").unwrap_or_default();
    let hook = p("LifecycleHookName").unwrap_or_default();
    let token = p("LifecycleActionToken");
    let result = p("LifecycleActionResult");
    let (instance_id, release) = {
        let mut state = shared.state.lock().expect("proxy state");
        // By instance id, or by token when only the token is given.
        let instance_id = p("InstanceId").or_else(|| {
            state
                .holds
                .iter()
                .find(|(_, h)| h.token.is_some() && h.token == token)
                .map(|(id, _)| id.clone())
        });
        let matched = instance_id.as_ref().and_then(|id| {
            let hold = state.holds.get(id)?;
            let token_ok = match (&token, &hold.token) {
                (Some(sent), Some(known)) => sent == known,
                _ => true,
            };
            (hold.hook == hook && token_ok).then(|| hold.clone())
        });
        state.calls.push(LifecycleCall {
            action: call.action.clone(),
            group: group.clone(),
            hook: hook.clone(),
            instance_id: p("InstanceId"),
            token: token.clone(),
            result: result.clone(),
            accepted: matched.is_some(),
            at: std::time::Instant::now(),
        });
        let Some(hold) = matched else {
            return error_xml(
                StatusCode::BAD_REQUEST,
                "autoscaling",
                "ValidationError",
                &format!(
                    "No active Lifecycle Action found with instance ID {}",
                    instance_id.unwrap_or_default()
                ),
            );
        };
        let id = instance_id.unwrap_or_default();
        let mut release = None;
        if call.action == "RecordLifecycleActionHeartbeat" {
            // A heartbeat restarts the heartbeat timeout.
            let deadline = state.deadline(&hold.hook, Instant::now());
            if let Some(held) = state.holds.get_mut(&id) {
                held.deadline = deadline;
            }
        }
        if call.action == "CompleteLifecycleAction" {
            state.holds.remove(&id);
            let abandon = result.as_deref() == Some("ABANDON");
            if hold.state == HoldState::TerminatingWait || abandon {
                release = Some(id.clone());
            }
        }
        (id, release)
    };
    if let Some(id) = release
        && let Err(e) = terminate(shared, &id, headers).await
    {
        return plain(
            StatusCode::BAD_GATEWAY,
            &format!("moto terminate {instance_id}: {e}"),
        );
    }
    let name = &call.action;
    let body = format!(
        "<{name}Response xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><{name}Result/><ResponseMetadata><RequestId>proxy-{instance_id}</RequestId></ResponseMetadata></{name}Response>"
    );
    xml_response(StatusCode::OK, body)
}

/// Terminates an instance through moto, as Auto Scaling would once its
/// hook lets it go.
async fn terminate(
    shared: &Shared,
    instance_id: &str,
    headers: &[(String, String)],
) -> io::Result<()> {
    let body = format!(
        "Action=TerminateInstanceInAutoScalingGroup&Version=2011-01-01&InstanceId={instance_id}&ShouldDecrementDesiredCapacity=true"
    );
    // The caller's signature names the autoscaling service and region, which
    // is how moto routes the request.
    let mut forwarded: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k == "authorization" || k == "x-amz-date" || k == "host"
        })
        .cloned()
        .collect();
    forwarded.push((
        "Content-Type".into(),
        "application/x-www-form-urlencoded; charset=utf-8".into(),
    ));
    let r = upstream::send(&shared.upstream, "POST", "/", &forwarded, body.as_bytes()).await?;
    if r.status != 200 {
        return Err(io::Error::other(format!(
            "status {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )));
    }
    Ok(())
}

fn throttle_response(call: &Call) -> Response {
    match (call.service.as_str(), call.params.is_empty()) {
        ("ec2", _) => error_xml(
            StatusCode::SERVICE_UNAVAILABLE,
            "ec2",
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        (_, true) => {
            let mut r = Response::new(Body::from(
                r#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}"#,
            ));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/x-amz-json-1.0"),
            );
            r
        }
        _ => error_xml(
            StatusCode::BAD_REQUEST,
            "autoscaling",
            "Throttling",
            "Rate exceeded",
        ),
    }
}

fn error_xml(status: StatusCode, service: &str, code: &str, message: &str) -> Response {
    let message = xml::escape(message);
    let body = if service == "ec2" {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy</RequestID></Response>"
        )
    } else {
        format!(
            "<ErrorResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy</RequestId></ErrorResponse>"
        )
    };
    xml_response(status, body)
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/xml"));
    r
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut r = Response::new(Body::from(text.to_string()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_and_credential_scopes() {
        let headers = vec![(
            "Authorization".to_string(),
            "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/autoscaling/aws4_request, SignedHeaders=host".to_string(),
        )];
        let call = classify(
            &headers,
            b"Action=CompleteLifecycleAction&LifecycleActionToken=a%2Fb+c&InstanceId=i-1",
        );
        assert_eq!(call.service, "autoscaling");
        assert_eq!(call.action, "CompleteLifecycleAction");
        assert_eq!(call.params["LifecycleActionToken"], "a/b c");
        let sqs = classify(
            &[("X-Amz-Target".into(), "AmazonSQS.ReceiveMessage".into())],
            b"{}",
        );
        assert_eq!(sqs.action, "ReceiveMessage");
        assert_eq!(credential_region(&headers).as_deref(), Some("us-east-1"));
    }

    #[test]
    fn marked_spot_requests_are_added_for_the_instances_asked_about() {
        // moto's answer with no spot request (as moto 5.2.1 writes it).
        let empty = r#"<?xml version="1.0" encoding="utf-8"?>
<DescribeSpotInstanceRequestsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><spotInstanceRequestSet/><requestId>request-id</requestId></DescribeSpotInstanceRequestsResponse>"#;
        let marked: BTreeMap<String, String> = [
            ("i-1".to_string(), "marked-for-termination".to_string()),
            ("i-2".to_string(), "marked-for-stop".to_string()),
        ]
        .into();
        let params = |body: &str| classify(&[], body.as_bytes()).params;
        let asked = params(
            "Action=DescribeSpotInstanceRequests&Filter.1.Name=instance-id&Filter.1.Value.1=i-1&Filter.1.Value.2=i-3",
        );
        let out = add_spot_requests(empty, &asked, &marked).expect("i-1 added");
        let items: Vec<&str> = xml::elements(&out, "spotInstanceRequestSet", "item")
            .into_iter()
            .map(|r| &out[r])
            .collect();
        assert_eq!(items.len(), 1, "{out}");
        assert_eq!(xml::text(items[0], "instanceId"), Some("i-1"));
        assert_eq!(xml::text(items[0], "code"), Some("marked-for-termination"));
        assert_eq!(xml::text(items[0], "state"), Some("active"));
        assert!(
            out.ends_with(
                "<requestId>request-id</requestId></DescribeSpotInstanceRequestsResponse>"
            )
        );
        // Not marked: moto's answer unchanged.
        let other = params("Filter.1.Name=instance-id&Filter.1.Value.1=i-3");
        assert_eq!(add_spot_requests(empty, &other, &marked), None);
        // Without an instance-id filter, every marked instance; moto's own
        // requests are kept.
        let theirs = empty.replace(
            "<spotInstanceRequestSet/>",
            "<spotInstanceRequestSet><item><instanceId>i-9</instanceId></item></spotInstanceRequestSet>",
        );
        let out = add_spot_requests(
            &theirs,
            &params("Action=DescribeSpotInstanceRequests"),
            &marked,
        )
        .unwrap();
        let ids: Vec<&str> = xml::elements(&out, "spotInstanceRequestSet", "item")
            .into_iter()
            .filter_map(|r| xml::text(&out[r], "instanceId"))
            .collect();
        assert_eq!(ids, vec!["i-9", "i-1", "i-2"]);
    }

    #[test]
    fn holds_time_out_with_the_hooks_default_result_unless_heartbeated() {
        let mut state = ProxyState::default();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(3);
        state.hooks.insert(
            "drain".into(),
            HookTimeout {
                heartbeat: timeout,
                default_result: "ABANDON".into(),
            },
        );
        state.hooks.insert(
            "warmup".into(),
            HookTimeout {
                heartbeat: timeout,
                default_result: "CONTINUE".into(),
            },
        );
        let hold = |state: HoldState, hook: &str, deadline: Option<Instant>| Hold {
            state,
            hook: hook.into(),
            token: None,
            deadline,
        };
        let deadline = state.deadline("drain", t0);
        assert_eq!(deadline, Some(t0 + timeout));
        assert_eq!(state.deadline("unknown", t0), None);
        state.holds.insert(
            "i-term".into(),
            hold(HoldState::TerminatingWait, "drain", deadline),
        );
        let warm = state.deadline("warmup", t0);
        state.holds.insert(
            "i-launch".into(),
            hold(HoldState::PendingWait, "warmup", warm),
        );
        state.holds.insert(
            "i-forever".into(),
            hold(HoldState::TerminatingWait, "other", None),
        );

        // Just before the timeout nothing ends.
        assert!(
            state
                .expire(t0 + timeout - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(state.holds.len(), 3);
        // At it: the terminate hold is let go (terminated), the launch hold
        // continues into service; a hold of a hook without a known timeout
        // stays.
        assert_eq!(state.expire(t0 + timeout), vec!["i-term".to_string()]);
        assert_eq!(
            state.holds.keys().collect::<Vec<_>>(),
            vec![&"i-forever".to_string()]
        );
        let mut expired = state.expired.clone();
        expired.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        assert_eq!(
            expired
                .iter()
                .map(|e| (e.instance_id.as_str(), e.state, e.result.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("i-launch", HoldState::PendingWait, "CONTINUE"),
                ("i-term", HoldState::TerminatingWait, "ABANDON"),
            ]
        );
    }
}
