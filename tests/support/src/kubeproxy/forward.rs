//! One request through the proxy: count it, inject a fault or forward it with
//! the test's namespaces mapped, and map the answer back.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};

use super::route::{self, Route};
use super::{ProxyState, lock};
use crate::apiserver::status::ApiError;
use crate::apiserver::{Counted, Verb};

/// Marks the test kit's own set-up requests.
pub const SETUP_HEADER: &str = "x-meshmirror-testkit-setup";

/// The real server's request body limit.
const BODY_LIMIT: usize = 3 * 1024 * 1024;

pub async fn handle(State(state): State<Arc<ProxyState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let params: Vec<(String, String)> = form_pairs(&query);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let watch = matches!(param("watch"), Some("true" | "1"));
    let route = route::parse(&parts.method, parts.uri.path(), watch);
    let agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    // The test kit's own set-up (the service's identity) is not the test's
    // traffic: not counted, no faults.
    let setup = parts.headers.contains_key(SETUP_HEADER);
    let counted = route.as_ref().filter(|_| !setup).map(|r| Counted {
        verb: r.verb,
        resource: &r.resource,
        namespace: r.namespace.as_deref(),
        name: r.name.as_deref(),
        cluster_wide: r.cluster_wide(),
        agent,
    });
    if let Some(c) = counted {
        state.counters.record(c);
        let (delay, fail) = lock(&state.faults).take(c.verb, c.resource, c.namespace);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(e) = fail {
            return e.into_response();
        }
        if let Some(expired) = expired(&state, c.verb, param("resourceVersion"), param("continue"))
        {
            return expired;
        }
    }
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(413, "RequestEntityTooLarge", e.to_string()).into_response();
        }
    };
    let response = match forward(
        &state,
        &parts.method,
        &parts.headers,
        route.as_ref(),
        &parts.uri,
        &params,
        body,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Some(c) = counted
        && c.verb.is_write()
    {
        state.counters.log_write(c, response.status().as_u16());
    }
    response
}

/// 410 for a watch from before a played compaction, or an expired token.
fn expired(
    state: &ProxyState,
    verb: Verb,
    rv: Option<&str>,
    token: Option<&str>,
) -> Option<Response> {
    let v = lock(&state.versions);
    let gone = ApiError::new(
        410,
        "Expired",
        "too old resource version (meshmirror-testkit proxy compaction)",
    );
    match verb {
        Verb::Watch => {
            let rv: u64 = rv.and_then(|s| s.parse().ok()).unwrap_or(0);
            // A real server answers a watch from a compacted version with
            // an ERROR event, not an HTTP error.
            (rv > 0 && rv < v.compacted_below).then(|| {
                let event = json!({"type": "ERROR", "object": gone.to_status()});
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                json_bytes(StatusCode::OK, line)
            })
        }
        Verb::List => token
            .filter(|t| v.expired_tokens.contains(*t))
            .map(|_| gone.into_response()),
        _ => None,
    }
}

async fn forward(
    state: &ProxyState,
    method: &Method,
    headers: &HeaderMap,
    route: Option<&Route>,
    uri: &http::Uri,
    params: &[(String, String)],
    body: Bytes,
) -> Result<Response, ApiError> {
    let namespaces = route.is_some_and(Route::namespaces);
    let body = request_body(state, headers, &body, namespaces)?;
    // Only for the test's own (admin) requests: a real cluster answers the
    // service's write into a missing namespace with 404, and so must this.
    if let Some(r) = route
        && let Some(ns) = &r.namespace
        && matches!(r.verb, Verb::Create | Verb::Update | Verb::Patch)
        && !headers.contains_key(header::AUTHORIZATION)
    {
        ensure_namespace(state, ns).await?;
    }
    let path = state.tenancy.path(uri.path());
    let query: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| match k.as_str() {
            "fieldSelector" => (k.clone(), state.tenancy.field_selector(v, namespaces)),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let target = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", encode_pairs(&query))
    };
    let mut upstream = http::Request::builder().method(method.clone()).uri(target);
    if let Some(v) = headers.get(header::USER_AGENT) {
        upstream = upstream.header(header::USER_AGENT, v);
    }
    // Protobuf bodies were turned into JSON above.
    match headers.get(header::CONTENT_TYPE) {
        Some(v) if v.to_str().is_ok_and(|ct| ct.contains("protobuf")) => {
            upstream = upstream.header(header::CONTENT_TYPE, "application/json");
        }
        Some(v) => upstream = upstream.header(header::CONTENT_TYPE, v),
        None => {}
    }
    upstream = upstream.header(header::ACCEPT, json_accept(headers));
    let upstream = upstream
        .body(kube::client::Body::from(body))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let client = client_for(state, headers).await?;
    let answer = client.send(upstream).await.map_err(|e| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("meshmirror-testkit proxy: {e}"),
        )
    })?;
    let (parts, body) = answer.into_parts();
    let filter = route.is_some_and(|r| r.cluster_wide() || (r.namespaces() && r.name.is_none()));
    let stream = route.is_some_and(|r| r.verb == Verb::Watch);
    let mut out = if stream {
        Response::new(watch_body(state, Body::new(body), filter, namespaces))
    } else {
        let bytes = axum::body::to_bytes(Body::new(body), usize::MAX)
            .await
            .map_err(|e| {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("meshmirror-testkit proxy: {e}"),
                )
            })?;
        Response::new(Body::from(answer_body(state, &bytes, filter, namespaces)))
    };
    *out.status_mut() = parts.status;
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    Ok(out)
}

/// The body with the test's namespaces prefixed, as JSON: JSON and YAML
/// (an apply) as they are, protobuf (kubectl's built-in kinds) decoded by
/// the test kit's server's decoder; CBOR is refused.
fn request_body(
    state: &ProxyState,
    headers: &HeaderMap,
    body: &Bytes,
    namespaces: bool,
) -> Result<Vec<u8>, ApiError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut value: Value = if ct.contains("protobuf") {
        crate::apiserver::protobuf::to_json(body).map_err(|e| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("meshmirror-testkit proxy: {e}"),
            )
        })?
    } else if ct.contains("cbor") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "meshmirror-testkit proxy: CBOR bodies cannot be mapped to the test's namespaces; send JSON",
        ));
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the body is neither JSON nor YAML: {e}"))
            })?,
        }
    };
    state.tenancy.body(&mut value, namespaces);
    Ok(serde_json::to_vec(&value).unwrap_or_default())
}

/// The test's namespace exists on the server before the first write in it
/// (the test kit's server needs none; a real one refuses writes elsewhere).
async fn ensure_namespace(state: &ProxyState, ns: &str) -> Result<(), ApiError> {
    let mut ensured = state.ensured.lock().await;
    if ensured.contains(ns) {
        return Ok(());
    }
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(state.admin.clone());
    let object = serde_json::from_value(json!({"metadata": {
        "name": state.tenancy.to_server(ns),
        "labels": {"meshmirror.io/test-namespaces": state.tenancy.prefix().trim_end_matches('-')},
    }}))
    .map_err(|e| ApiError::internal(e.to_string()))?;
    match api.create(&Default::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            return Err(ApiError::new(
                503,
                "ServiceUnavailable",
                format!("meshmirror-testkit proxy: creating namespace {ns}: {e}"),
            ));
        }
    }
    ensured.insert(ns.to_string());
    Ok(())
}

async fn client_for(state: &ProxyState, headers: &HeaderMap) -> Result<kube::Client, ApiError> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Ok(state.admin.clone());
    };
    if let Some(c) = lock(&state.by_token).get(token) {
        return Ok(c.clone());
    }
    let client = crate::realkube::token_client(&state.kubeconfig, token)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "meshmirror-testkit proxy: a client for the token: {e}"
            ))
        })?;
    lock(&state.by_token).insert(token.to_string(), client.clone());
    Ok(client)
}

/// JSON instead of protobuf, keeping a Table request as it is.
fn json_accept(headers: &HeaderMap) -> HeaderValue {
    match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        Some(a) if !a.contains("protobuf") && !a.contains("cbor") => {
            HeaderValue::from_str(a).unwrap_or(HeaderValue::from_static("application/json"))
        }
        _ => HeaderValue::from_static("application/json"),
    }
}

/// A list's (or an object's) answer: other tests' items dropped from a list
/// across all namespaces, versions noted, the prefix taken out.
fn answer_body(state: &ProxyState, bytes: &Bytes, filter: bool, namespaces: bool) -> Vec<u8> {
    let mut text = bytes.to_vec();
    if let Ok(mut value) = serde_json::from_slice::<Value>(bytes) {
        note_versions(state, &value);
        if filter {
            // A list's items, or a Table's rows (kubectl get) by their object.
            if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
                items.retain(|o| state.tenancy.visible(o, namespaces));
            }
            if let Some(rows) = value.get_mut("rows").and_then(Value::as_array_mut) {
                rows.retain(|r| state.tenancy.visible(&r["object"], namespaces));
            }
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("remainingItemCount");
            }
            text = serde_json::to_vec(&value).unwrap_or_default();
        }
    }
    state.tenancy.strip(&text)
}

fn note_versions(state: &ProxyState, value: &Value) {
    let rv = value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok());
    let token = value
        .pointer("/metadata/continue")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let mut v = lock(&state.versions);
    if let Some(rv) = rv {
        v.highest = v.highest.max(rv);
    }
    if let Some(t) = token {
        v.issued_tokens.insert(t.to_string());
    }
}

/// A watch's events, line by line: other tests' objects dropped (across
/// all namespaces), versions noted, the prefix taken out; ended when the
/// test closes the proxy's watches.
fn watch_body(state: &ProxyState, upstream: Body, filter: bool, namespaces: bool) -> Body {
    let tenancy = state.tenancy.clone();
    let mut closed = state.close_watches.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let versions = state.versions.clone();
    tokio::spawn(async move {
        let mut upstream = upstream.into_data_stream();
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                c = upstream.next() => c,
                _ = closed.changed() => None,
                _ = tx.closed() => None,
            };
            let end_of_stream = !matches!(chunk, Some(Ok(_)));
            if let Some(Ok(chunk)) = chunk {
                pending.extend_from_slice(&chunk);
            }
            if end_of_stream && !pending.is_empty() && pending.last() != Some(&b'\n') {
                pending.push(b'\n');
            }
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let object = event.get("object").cloned().unwrap_or(Value::Null);
                if let Some(rv) = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    let mut v = lock(&versions);
                    v.highest = v.highest.max(rv);
                }
                let is_object = matches!(
                    event.get("type").and_then(Value::as_str),
                    Some("ADDED" | "MODIFIED" | "DELETED")
                );
                if filter && is_object && !tenancy.visible(&object, namespaces) {
                    continue;
                }
                if tx
                    .send(Ok(Bytes::from(tenancy.strip(&line))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if end_of_stream {
                break;
            }
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn json_bytes(code: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn encode_pairs(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
