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
//! - instance facts moto does not model for Auto Scaling instances (public
//!   IPv4, IPv6, spot): added to `DescribeInstances` answers;
//! - throttling (`Throttling`, `RequestLimitExceeded`) for the next N calls
//!   of an action;
//! - a count of every call by action.
//!
//! Everything else is forwarded unchanged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

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
}

#[derive(Clone, Debug)]
struct Hold {
    state: HoldState,
    hook: String,
    token: Option<String>,
}

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
    requests: u64,
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
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.task.abort();
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
        Ok(AwsProxy { addr, shared, task })
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

    /// Shows `instance_id` in `state`, held by `hook`, until completed.
    pub fn hold(&self, instance_id: &str, state: HoldState, hook: &str, token: Option<&str>) {
        self.state().holds.insert(
            instance_id.to_string(),
            Hold {
                state,
                hook: hook.to_string(),
                token: token.map(str::to_string),
            },
        );
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
    let throttled = {
        let mut state = shared.state.lock().expect("proxy state");
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
            let rewritten = rewrite(&shared, &call.action, &upstream);
            respond(upstream, rewritten)
        }
    }
}

fn rewrite(shared: &Shared, action: &str, r: &upstream::Response) -> Option<String> {
    if r.status != 200 {
        return None;
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
            && let Some(hook) = &state.hold_launches
        {
            state.holds.insert(
                id.clone(),
                Hold {
                    state: HoldState::PendingWait,
                    hook: hook.clone(),
                    token: None,
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
    }
}
